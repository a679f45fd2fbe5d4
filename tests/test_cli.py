"""The ``cloudwds`` command: every subcommand on real shards, locally and on S3 (moto).

Most tests call :func:`cloudwds.cli.main` in-process (fast); a few run ``python -m cloudwds`` in
a subprocess to check what a shell sees (redirected bytes, exit status).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import make_shards, write_tar
from moto_support import moto_s3

from cloudwds.cli import main
from cloudwds.index import INDEX_NAME, load_index

# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@dataclass
class S3:
    endpoint: str
    fs: Any  # s3fs filesystem for setting up and inspecting buckets

    @property
    def options(self) -> str:
        return json.dumps({"endpoint_url": self.endpoint, "use_listings_cache": False})

    def upload(self, paths: list[str], prefix: str) -> list[str]:
        urls = []
        for path in paths:
            key = f"{prefix}/{os.path.basename(path)}"
            self.fs.put_file(path, key)
            urls.append(f"s3://{key}")
        return urls


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 with dummy credentials; bucket ``clidata``."""
    with moto_s3("clidata") as (endpoint, fs):
        yield S3(endpoint, fs)


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch):
    for name in ("WDS_CACHE", "WDS_CACHE_SIZE", "WDS_REWRITE", "GOPEN_REWRITE", "USE_AIS_FOR"):
        monkeypatch.delenv(name, raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def shards_in(directory, nshards: int, nsamples: int, **kw: Any):
    os.makedirs(directory, exist_ok=True)
    return make_shards(directory, nshards, nsamples, **kw)


def read_tar(path_or_bytes) -> list[tuple[str, bytes]]:
    if isinstance(path_or_bytes, bytes):
        tar = tarfile.open(fileobj=io.BytesIO(path_or_bytes))
    else:
        tar = tarfile.open(path_or_bytes)
    with tar:
        out = []
        for info in tar:
            f = tar.extractfile(info)
            assert f is not None
            out.append((info.name, f.read()))
        return out


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))


SUBCOMMANDS = [
    ["ls"],
    ["cat"],
    ["head"],
    ["stats"],
    ["index"],
    ["verify"],
    ["create"],
    ["reshard"],
    ["cache"],
    ["cache", "ls"],
    ["cache", "stats"],
    ["cache", "clear"],
    ["cache", "prefetch"],
    ["demo"],
]


# --------------------------------------------------------------------------------------------
# help and errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cloudwds {' '.join(command)}")


def test_errors_are_one_line_with_nonzero_exit(capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, "head", str(tmp_path / "missing.tar"))
    assert code == 1 and out == ""
    assert err.startswith("cloudwds head: error: ") and err.count("\n") == 1
    assert "missing.tar" in err

    code, _, err = run(capsys, "--storage-options", "{nope", "ls", "x.tar")
    assert code == 1 and err.startswith("cloudwds ls: error: --storage-options: not valid JSON")

    monkeypatch.setenv("WDS_CACHE", "off")
    code, _, err = run(capsys, "cache", "stats")
    assert code == 1 and "no cache: WDS_CACHE is off" in err
    monkeypatch.delenv("WDS_CACHE")

    with pytest.raises(SystemExit) as exit_:
        main(["reshard", "x.tar"])  # -o is required: a usage error
    assert exit_.value.code == 2


# --------------------------------------------------------------------------------------------
# ls, head, cat
# --------------------------------------------------------------------------------------------


def test_ls_sizes_then_counts_once_indexed(capsys, tmp_path):
    shards = make_shards(tmp_path, 3, 4)
    code, out, _ = run(capsys, "ls", "--bytes", shards.spec)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["samples", "size", "url"]
    for line, path in zip(lines[1:4], shards.paths):
        assert line.split() == ["-", str(os.path.getsize(path)), path]
    total = sum(os.path.getsize(p) for p in shards.paths)
    assert lines[4].split() == ["-", str(total), "total", "(3", "shards)"]

    assert run(capsys, "-q", "index", shards.spec)[0] == 0
    code, out, _ = run(capsys, "ls", shards.spec)
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["4", "4", "4", "12"]
    assert lines[1].split()[1] == "10K"  # human-readable by default

    # A directory lists the shards in it.
    code, out, _ = run(capsys, "ls", str(tmp_path))
    assert [line.split()[-1] for line in out.splitlines()[1:4]] == shards.paths


def test_head_n_and_cat(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 5, fields=("txt", "cls", "png"))
    code, out, _ = run(capsys, "head", "-n", "3", shards.paths[0])
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    key = shards.keys[0][1]
    values = shards.values[key]
    assert lines[1] == f"{key}\t" + " ".join(f"{f}:{len(values[f])}" for f in ("txt", "cls", "png"))

    code, out, _ = run(capsys, "cat", shards.spec)
    lines = out.splitlines()
    assert lines[0] == f"# {shards.paths[0]}" and lines[6] == f"# {shards.paths[1]}"
    assert [line.split("\t")[0] for line in lines if not line.startswith("#")] == shards.all_keys

    code, out, _ = run(capsys, "head", shards.spec, "--key", "s1-0003")
    assert out.splitlines()[-1].startswith("s1-0003\t")


def test_cat_field_dumps_the_exact_bytes(capsysbinary, tmp_path):
    shards = make_shards(tmp_path, 2, 5, fields=("txt", "png"))
    code = main(["cat", shards.spec, "--key", "s1-0002", "--field", "png"])
    assert code == 0
    assert capsysbinary.readouterr().out == shards.values["s1-0002"]["png"]
    # Without --key: the first sample; -o writes a file (any URL) instead of stdout.
    target = tmp_path / "first.txt"
    assert main(["head", shards.spec, "--field", "txt", "-o", str(target)]) == 0
    assert target.read_bytes() == shards.values["s0-0000"]["txt"]


def test_cat_field_errors(capsys, tmp_path):
    shards = make_shards(tmp_path, 1, 3)
    code, _, err = run(capsys, "cat", shards.paths[0], "--key", "s0-0001", "--field", "jpg")
    assert code == 1 and "has no field 'jpg' (fields: txt, cls)" in err
    code, _, err = run(capsys, "cat", shards.paths[0], "--key", "nope", "--field", "txt")
    assert code == 1 and "no sample with key 'nope'" in err


def test_cat_field_in_a_shell(tmp_path):
    """What a user types: ``cloudwds cat URL --key K --field png > out.png``."""
    shards = make_shards(tmp_path, 2, 3, fields=("png", "cls"))
    out = tmp_path / "out.png"
    cmd = f"{sys.executable} -m cloudwds cat '{shards.spec}' --key s1-0001 --field png > {out}"
    proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == shards.values["s1-0001"]["png"]


# --------------------------------------------------------------------------------------------
# stats, index, verify
# --------------------------------------------------------------------------------------------


def test_stats_counts_fields_missing_and_duplicates(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 5, fields=("txt", "cls"))
    odd = write_tar(
        tmp_path / "odd.tar",
        [
            ("a.txt", b"aa"),
            ("a.cls", b"1"),
            ("b.txt", b"bbb"),  # b has no cls
            ("c.txt", b"c"),
            ("c.txt", b"c"),  # duplicate field
            ("a.json", b"{}"),  # key a again: non-adjacent duplicate
        ],
    )
    code, out, _ = run(capsys, "stats", "--json", shards.spec, odd)
    assert code == 0
    result = json.loads(out)
    txt_bytes = sum(len(shards.values[k]["txt"]) for k in shards.all_keys) + 2 + 3 + 1 + 1
    assert result["shards"] == 3
    assert result["samples"] == 10 + 4
    assert result["members"] == 20 + 6
    assert result["bytes"] == sum(os.path.getsize(p) for p in [*shards.paths, odd])
    assert result["fields"]["txt"] == {
        "samples": 13,
        "missing": 1,  # the second 'a' run has only json
        "bytes": txt_bytes,
        "mean_bytes": txt_bytes / 13,
    }
    assert result["fields"]["cls"]["missing"] == 3  # b, c, second a
    assert result["fields"]["json"]["samples"] == 1
    assert result["duplicate_fields"] == 1
    assert result["non_adjacent_duplicate_keys"] == 1

    code, out, _ = run(capsys, "stats", shards.spec)
    assert code == 0
    assert "samples      10" in out and "non-adjacent duplicate keys     0" in out


def test_index_writes_the_manifest(capsys, tmp_path):
    shards = make_shards(tmp_path, 3, 6)
    code, out, err = run(capsys, "index", shards.spec)
    assert code == 0
    target = tmp_path / INDEX_NAME
    assert f"wrote {target}: 3 shards, 18 samples" in err
    manifest = load_index(str(target))
    assert manifest.counts() == {p: 6 for p in shards.paths}
    doc = json.loads(target.read_text())
    assert [s["url"] for s in doc["shards"]] == [os.path.basename(p) for p in shards.paths]

    code, out, _ = run(capsys, "index", shards.paths[0], "-o", "-", "--checksum", "none")
    doc = json.loads(out)
    assert doc["shards"][0]["samples"] == 6 and doc["shards"][0]["sha256"] is None
    assert doc["shards"][0]["url"] == shards.paths[0]

    custom = tmp_path / "sub" / "m.json"
    assert run(capsys, "-q", "index", shards.spec, "-o", str(custom))[0] == 0
    assert load_index(str(custom)).total_samples == 18


def test_verify_good_shards(capsys, tmp_path):
    shards = make_shards(tmp_path, 3, 5)
    code, out, err = run(capsys, "verify", shards.spec)
    assert (code, out) == (0, "")
    assert "verified 3 shards, 15 samples: ok" in err
    run(capsys, "index", shards.spec)
    assert run(capsys, "verify", shards.spec, "--manifest")[0] == 0
    # Without URLs: every shard the manifest lists.
    code, _, err = run(capsys, "verify", "--manifest", str(tmp_path / INDEX_NAME))
    assert code == 0 and "verified 3 shards" in err


def test_verify_catches_truncation_and_bad_headers(capsys, tmp_path):
    shards = make_shards(tmp_path, 3, 5)
    with open(shards.paths[0], "r+b") as f:
        f.truncate(2000)  # inside the third member
    flip(shards.paths[2], 1024 + 3)  # a byte of the second member's name: header checksum
    code, out, err = run(capsys, "verify", shards.spec)
    assert code == 1
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2
    assert fails[0].startswith(f"FAIL {shards.paths[0]}: TruncatedShardError")
    assert fails[1].startswith(f"FAIL {shards.paths[2]}: TarFormatError: bad tar header checksum")
    assert "2 problems in 2 shards" in err


def test_verify_catches_data_corruption_against_the_manifest(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 5)
    run(capsys, "index", shards.spec)
    flip(shards.paths[1], 512 + 2)  # inside the first member's data: the tar is still valid
    assert run(capsys, "verify", shards.spec)[0] == 0  # structurally fine...
    code, out, _ = run(capsys, "verify", shards.spec, "--manifest")
    assert code == 1  # ...but not the bytes that were indexed
    assert out.startswith(f"FAIL {shards.paths[1]}: sha256 mismatch")
    # A shard the manifest does not know is a problem too.
    extra = make_shards(tmp_path, 1, 2, prefix="extra")
    code, out, _ = run(capsys, "verify", extra.paths[0], "--manifest", str(tmp_path / INDEX_NAME))
    assert code == 1 and "not listed in the manifest" in out


def test_verify_catches_non_adjacent_duplicate_keys(capsys, tmp_path):
    path = write_tar(
        tmp_path / "split.tar",
        [("a.txt", b"1"), ("b.txt", b"2"), ("a.cls", b"3"), ("c.txt", b"4"), ("c.txt", b"5")],
    )
    code, out, _ = run(capsys, "verify", path)
    assert code == 1
    assert f"FAIL {path}: 1 fields repeated within a sample" in out
    assert f"FAIL {path}: 1 non-adjacent duplicate keys" in out
    assert "key 'a' appears again" in out


def test_verify_missing_manifest_is_an_error(capsys, tmp_path):
    shards = make_shards(tmp_path, 1, 2)
    code, _, err = run(capsys, "verify", shards.spec, "--manifest")
    assert code == 1 and "no manifest at" in err


# --------------------------------------------------------------------------------------------
# create, reshard
# --------------------------------------------------------------------------------------------


def test_create_from_file_text_and_pipe_sources(capsys, tmp_path):
    (tmp_path / "img.bin").write_bytes(bytes(range(256)) * 3)
    recipe = tmp_path / "recipe.txt"
    recipe.write_text(
        "# a comment, then members in order\n"
        "\n"
        "s1.bin img.bin\n"
        "s1.txt text:hello  world\n"
        "s1.json pipe:printf '{\"n\": 1}'\n"
        "s2.txt text:second\n"
    )
    out = tmp_path / "built.tar"
    code, _, err = run(capsys, "create", str(recipe), "-o", str(out), "-C", str(tmp_path))
    assert code == 0 and f"wrote {out}: 4 members" in err
    assert read_tar(str(out)) == [
        ("s1.bin", bytes(range(256)) * 3),
        ("s1.txt", b"hello  world"),
        ("s1.json", b'{"n": 1}'),
        ("s2.txt", b"second"),
    ]
    # The result is a shard cloudwds reads, and a .tar.gz name is gzipped.
    code, listing, _ = run(capsys, "cat", str(out))
    assert listing.splitlines() == ["s1\tbin:768 txt:12 json:8", "s2\ttxt:6"]
    gz = tmp_path / "built.tar.gz"
    assert run(capsys, "create", str(recipe), "-o", str(gz), "-C", str(tmp_path))[0] == 0
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert read_tar(str(gz)) == read_tar(str(out))


def test_create_errors_name_the_recipe_line(capsys, tmp_path):
    recipe = tmp_path / "r.txt"
    recipe.write_text("a.txt text:x\nb.txt pipe:exit 3\n")
    out = tmp_path / "o.tar"
    code, _, err = run(capsys, "create", str(recipe), "-o", str(out))
    assert code == 1 and f"{recipe}:2: command exited with status 3" in err
    assert not out.exists()  # nothing half-written is left behind
    recipe.write_text("a.txt missing-file.bin\n")
    code, _, err = run(capsys, "create", str(recipe), "-o", str(out), "-C", str(tmp_path))
    assert code == 1 and f"{recipe}:1: cannot read 'missing-file.bin'" in err
    recipe.write_text("just-one-word\n")
    assert "expected 'archive-name source'" in run(capsys, "create", str(recipe), "-o", str(out))[2]


def samples_of(paths: list[str]) -> list[tuple[str, dict[str, bytes]]]:
    """(key, fields) of every sample, in order, read with tarfile (independent of cloudwds)."""
    out: list[tuple[str, dict[str, bytes]]] = []
    for path in paths:
        for name, data in read_tar(path):
            key, field = name.split(".", 1)
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][field] = data
    return out


def test_reshard_two_into_five_preserves_every_sample(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 10, fields=("txt", "cls", "png"))
    pattern = str(tmp_path / "out" / "small-%06d.tar")
    code, out, err = run(capsys, "reshard", shards.spec, "-o", pattern, "--maxcount", "4")
    assert code == 0
    written = [line.split("\t") for line in out.splitlines()]
    assert [url for url, _ in written] == [pattern % i for i in range(5)]
    assert [int(n) for _, n in written] == [4, 4, 4, 4, 4]
    assert "wrote 5 shards, 20 samples from 2 input shards" in err
    assert samples_of([pattern % i for i in range(5)]) == samples_of(shards.paths)

    # --shuffle: same samples, another order, deterministic from --seed.
    shuffled = str(tmp_path / "shuf" / "s-%03d.tar")
    args = ["reshard", shards.spec, "-o", shuffled, "--maxcount", "7", "--shuffle", "--seed", "3"]
    assert run(capsys, *args)[0] == 0
    got = samples_of([shuffled % i for i in range(3)])
    assert got != samples_of(shards.paths)
    assert sorted(got) == sorted(samples_of(shards.paths))


def test_reshard_by_size_and_refusals(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 10)
    pattern = str(tmp_path / "bysize-%d.tar")
    code, out, _ = run(capsys, "reshard", shards.spec, "-o", pattern, "--maxsize", "4K")
    assert code == 0
    outputs = [line.split("\t")[0] for line in out.splitlines()]
    assert len(outputs) > 2
    assert samples_of(outputs) == samples_of(shards.paths)

    code, _, err = run(
        capsys, "reshard", shards.spec, "-o", str(tmp_path / "x.tar"), "--maxcount", "3"
    )
    assert code == 1 and "needs one %d-style field" in err
    code, _, err = run(capsys, "reshard", shards.spec, "-o", "x-%d.tar")
    assert code == 1 and "--maxcount" in err
    over = str(tmp_path / "shard-%06d.tar")
    code, _, err = run(capsys, "reshard", shards.spec, "-o", over, "--maxcount", "3")
    assert code == 1 and "could overwrite input shard" in err


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


def test_every_reading_command_on_s3(capsys, s3, tmp_path):
    shards = make_shards(tmp_path, 3, 5, fields=("txt", "png"))
    s3.upload(shards.paths, "clidata/read")
    spec = "s3://clidata/read/shard-{000000..000002}.tar"
    so = ["--storage-options", s3.options]

    code, out, _ = run(capsys, *so, "ls", "--bytes", spec)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:4]] == [
        str(os.path.getsize(p)) for p in shards.paths
    ]
    code, out, _ = run(capsys, *so, "ls", "s3://clidata/read/")  # a "directory"
    assert [line.split()[-1] for line in out.splitlines()[1:4]] == [
        f"s3://clidata/read/{os.path.basename(p)}" for p in shards.paths
    ]

    assert run(capsys, "index", spec, *so)[0] == 0  # options after the subcommand work too
    assert s3.fs.exists(f"clidata/read/{INDEX_NAME}")
    code, out, _ = run(capsys, *so, "ls", spec)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["5", "5", "5", "15"]

    code, out, _ = run(capsys, *so, "head", "-n", "2", spec)
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        "# " + spec.replace("{000000..000002}", "000000"),
        "s0-0000",
        "s0-0001",
    ]

    code, out, _ = run(capsys, *so, "stats", "--json", spec)
    assert json.loads(out)["samples"] == 15

    assert run(capsys, *so, "verify", spec, "--manifest")[0] == 0
    s3.fs.pipe("clidata/read/shard-000001.tar", open(shards.paths[1], "rb").read()[:3000])
    code, out, _ = run(capsys, *so, "verify", spec, "--manifest")
    assert code == 1 and "s3://clidata/read/shard-000001.tar: TruncatedShardError" in out


def test_cat_field_from_s3(capsysbinary, s3, tmp_path):
    shards = make_shards(tmp_path, 1, 4, fields=("png",))
    (url,) = s3.upload(shards.paths, "clidata/cat")
    assert (
        main(["--storage-options", s3.options, "cat", url, "--key", "s0-0002", "--field", "png"])
        == 0
    )
    assert capsysbinary.readouterr().out == shards.values["s0-0002"]["png"]


def test_create_and_reshard_to_s3(capsys, s3, tmp_path):
    so = ["--storage-options", s3.options]
    recipe = tmp_path / "r.txt"
    recipe.write_text("k.txt text:on s3\n")
    assert run(capsys, *so, "create", str(recipe), "-o", "s3://clidata/made/one.tar")[0] == 0
    assert read_tar(s3.fs.cat_file("clidata/made/one.tar")) == [("k.txt", b"on s3")]

    shards = make_shards(tmp_path, 2, 6)
    s3.upload(shards.paths, "clidata/big")
    code, out, _ = run(
        capsys,
        *so,
        "reshard",
        "s3://clidata/big/shard-{000000..000001}.tar",
        "-o",
        "s3://clidata/small/part-%04d.tar",
        "--maxcount",
        "5",
    )
    assert code == 0
    assert [line.split("\t") for line in out.splitlines()] == [
        ["s3://clidata/small/part-0000.tar", "5"],
        ["s3://clidata/small/part-0001.tar", "5"],
        ["s3://clidata/small/part-0002.tar", "2"],
    ]
    local = []
    for i in range(3):
        path = tmp_path / f"back-{i}.tar"
        path.write_bytes(s3.fs.cat_file(f"clidata/small/part-{i:04d}.tar"))
        local.append(str(path))
    assert samples_of(local) == samples_of(shards.paths)


def test_cache_subcommands(capsys, s3, tmp_path):
    shards = make_shards(tmp_path, 2, 3)
    urls = s3.upload(shards.paths, "clidata/cached")
    cache = ["--cache-dir", str(tmp_path / "cache"), "--storage-options", s3.options]

    code, out, err = run(capsys, *cache, "cache", "prefetch", *urls, shards.paths[0])
    assert code == 0
    assert "skipping 1 local shards" in err and "prefetched 2 shards" in err
    assert "2 downloaded" in err

    code, out, _ = run(capsys, *cache, "cache", "ls", "--bytes")
    lines = out.splitlines()
    assert len(lines) == 2
    for line, url, path in zip(lines, urls, shards.paths):
        size, _, _, listed_url, cached = line.split()
        assert (int(size), listed_url) == (os.path.getsize(path), url)
        assert open(cached, "rb").read() == open(path, "rb").read()

    code, out, _ = run(capsys, *cache, "cache", "stats", "--json")
    stats = json.loads(out)
    assert stats["shards"] == 2 and stats["bytes"] == sum(map(os.path.getsize, shards.paths))

    # Reading through the cache is a hit now; a second prefetch downloads nothing.
    code, _, err = run(capsys, *cache, "cache", "prefetch", *urls)
    assert code == 0 and "0 downloaded, 2 already cached" in err

    code, _, err = run(capsys, *cache, "cache", "clear")
    assert code == 0 and "removed 2 shards" in err
    assert run(capsys, *cache, "cache", "ls")[1] == ""


_IMPORTS_AFTER = """
import sys

from cloudwds.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exn:
    code = exn.code
heavy = sorted(m for m in ("torch", "s3fs", "gcsfs", "adlfs", "PIL") if m in sys.modules)
print("HEAVY", ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["ls", "{dir}"], ["verify", "{dir}/shard-000000.tar"]]
)
def test_cli_starts_without_importing_torch(tmp_path, argv):
    """``--help``, ``ls`` and ``verify`` on local shards import neither torch nor cloud SDKs."""
    make_shards(tmp_path, 2, 3)
    args = [a.replace("{dir}", str(tmp_path)) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "HEAVY "
    if argv[0] == "ls":
        assert "shard-000001.tar" in proc.stdout


def test_command_of_skips_global_options():
    from cloudwds.commands import command_of

    assert command_of(["--cache-dir", "ls", "verify", "x.tar"]) == "verify"
    assert command_of(["-q", "--storage-options", "{}", "ls", "d/"]) == "ls"
    assert command_of(["--help"]) is None


def test_cache_command_uses_the_default_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, out, _ = run(capsys, "cache", "stats")
    assert code == 0
    assert str(tmp_path / "cloudwds" / "shards") in out


def test_verify_manifest_does_not_swallow_the_shard_pattern(capsys, tmp_path):
    """Finding 3: ``verify --manifest 'x-{0..2}.tar'`` verifies the shards against the default
    manifest instead of reading the pattern as a manifest; a missing manifest says so."""
    shards = make_shards(tmp_path, 3, 4)
    assert run(capsys, "index", shards.spec)[0] == 0
    code, _, err = run(capsys, "verify", "--manifest", shards.spec)
    assert code == 0 and "verified 3 shards, 12 samples: ok" in err
    code, _, err = run(capsys, "verify", "--manifest", str(tmp_path / "nosuch.json"), shards.spec)
    assert code == 1
    assert (
        err.strip()
        == f"cloudwds verify: error: --manifest {tmp_path}/nosuch.json: no such manifest"
    )


def test_ls_errors_name_the_url(capsys, s3):
    """Finding 4: listing a missing prefix or bucket names the URL."""
    so = ["--storage-options", s3.options]
    for url in ("s3://clidata/nodir/", "s3://nosuchbucket-h1/"):
        code, _, err = run(capsys, *so, "ls", url)
        assert code == 1
        assert err.startswith("cloudwds ls: error: cannot list") and url in err, err


def test_ls_empty_directory_is_an_error(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no shards here")
    code, out, err = run(capsys, "ls", str(tmp_path / "empty"))
    assert code == 1 and out == ""
    assert "no shards (*.tar, *.tar.gz, *.tgz) in" in err and "empty" in err


def test_ls_http_directory_listing_shows_real_sizes(capsys, tmp_path):
    """Finding 4: a plain HTTP index page has no sizes; ls asks each shard instead of printing 0."""
    import functools
    import http.server
    import threading

    shards = make_shards(tmp_path, 2, 3)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        code, out, _ = run(capsys, "ls", "--bytes", base)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    want = [["-", str(os.path.getsize(p)), base + os.path.basename(p)] for p in shards.paths]
    assert rows[:2] == want
    assert rows[2][1] == str(sum(os.path.getsize(p) for p in shards.paths))


def test_verify_counts_the_samples_read_from_a_truncated_shard(capsys, tmp_path):
    """Finding 5: a truncated shard reports the samples read before the break, not 0."""
    shards = make_shards(tmp_path, 1, 10)
    with tarfile.open(shards.paths[0]) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    with open(shards.paths[0], "r+b") as f:
        f.truncate(offsets[14] + 600)  # inside the first member of sample 7 (two members each)
    code, out, err = run(capsys, "verify", shards.paths[0])
    assert code == 1
    assert "TruncatedShardError" in out
    assert "(7 samples read before it; the last may be incomplete)" in out
    assert "verified 1 shards, 7 samples read: 1 problems in 1 shards" in err


def test_verify_decode_names_the_member_that_does_not_decode(capsys, tmp_path):
    """Finding 5: a corrupt JPEG passes the tar checks; ``--decode`` finds it and names it."""
    shards = make_shards(tmp_path, 1, 4, fields=("jpg", "json", "cls"))
    with tarfile.open(shards.paths[0]) as tar:
        good = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    bad = [
        (name, data[:200] + b"\x00" * (len(data) - 200) if name == "s0-0002.jpg" else data)
        for name, data in good
    ]
    write_tar(shards.paths[0], bad)
    code, _, err = run(capsys, "verify", shards.paths[0])
    assert code == 0 and "ok" in err  # the tar framing is fine
    code, out, err = run(capsys, "verify", "--decode", shards.paths[0])
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"FAIL {shards.paths[0]}: 1 members do not decode"
    assert lines[1].startswith("  e.g. member 's0-0002.jpg': ")
    write_tar(shards.paths[0], good)
    code, _, err = run(capsys, "verify", "--decode", shards.paths[0])
    assert code == 0 and "verified 1 shards, 4 samples: ok" in err
