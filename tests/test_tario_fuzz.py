"""Seeded fuzz test of the tar reader on damaged and hostile shards (issue 10).

Mutants are generated at test time from valid shards (cloudwds's ``TarWriter``, ``tarfile`` in
GNU format with long names, in pax format with unicode names, plain ustar, and gzip shards):
byte flips in headers, garbage and huge/negative sizes, truncation, malformed pax records and
GNU long names, zero blocks in the middle, corrupt gzip. Every mutant is read by the tar reader,
by ``scan_shard`` (what ``cloudwds index`` runs), by ``WebDataset(url)`` and by ``cloudwds
verify``, in child processes under a memory limit (``RLIMIT_AS``) with a time limit per read.

What must hold, for every mutant:

- no read hangs and none runs out of memory;
- a failure is a cloudwds ``ShardError`` (typed) whose ``url`` is the shard and whose ``member``
  is set;
- no silent loss: every member yielded is really in the (decompressed) mutant; where
  :mod:`tarfile` reads the mutant cleanly with the original member list, we yield exactly its
  members, or report the non-zero data after the end-of-archive block; truncated tars and tars
  with a zero block before a member always fail, after yielding exactly the members before it.

The mutant generator is also used by ``bench/fuzz_compare.py`` (same mutants through
webdataset). Run ``python tests/test_tario_fuzz.py child DIR`` to evaluate a directory by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

SEED = 20261130
BLOCK = 512
TIME_LIMIT = 5.0  # seconds per read of one small mutant (a normal read takes milliseconds)
MEMORY_HEADROOM = 1 << 30  # bytes of address space the child may add after its imports


# --------------------------------------------------------------------------------------------
# valid shards
# --------------------------------------------------------------------------------------------


@dataclass
class Base:
    label: str
    raw: bytes  # the uncompressed tar
    gz: bool  # mutants of this base are mutants of gzip.compress(raw)


def _tarfile_bytes(fmt: int, entries: Iterable[tuple[str, bytes | str | None]]) -> bytes:
    """Entries are (name, data) files, (name, None) directories, (name, "->target") symlinks."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type = tarfile.SYMTYPE
                info.linkname = data[2:]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def base_shards() -> list[Base]:
    """The valid shards every mutant starts from (deterministic)."""
    from cloudwds import TarWriter

    rng = random.Random(SEED)
    out = io.BytesIO()
    with TarWriter(out, mtime=1_700_000_000) as writer:
        for i in range(10):
            sample: dict[str, Any] = {
                "__key__": f"sample{i:03d}",
                "txt": f"caption {i} " * rng.randrange(1, 40),
                "cls": i,
                "json": {"i": i, "tags": ["a", "b"][: i % 3]},
                "bin": rng.randbytes(rng.choice([0, 1, 511, 512, 513, 2000])),
            }
            if i == 4:
                sample["npy"] = rng.randbytes(300_000)  # a member read outside the shared buffer
            writer.write(sample)
    writer_tar = out.getvalue()

    long_dir = "d" * 70 + "/" + "e" * 50
    gnu_tar = _tarfile_bytes(
        tarfile.GNU_FORMAT,
        [(long_dir, None)]
        + [
            (f"{long_dir}/k{i}.{'x' * 90}.txt", rng.randbytes(rng.randrange(0, 900)))
            for i in range(5)
        ]
        + [(f"{long_dir}/link.txt", "->k0.txt"), ("short.cls", b"7")],
    )
    pax_tar = _tarfile_bytes(
        tarfile.PAX_FORMAT,
        [
            (f"caf\u00e9/\u00e9t\u00e9{i}.txt", rng.randbytes(rng.randrange(1, 700)))
            for i in range(4)
        ]
        + [("p/" + "z" * 150 + ".json", b"{}"), ("plain.cls", b"1")],
    )
    ustar_tar = _tarfile_bytes(
        tarfile.USTAR_FORMAT,
        [
            ("/".join(f"dir{j:02d}" for j in range(15)) + f"/s{i}.png", rng.randbytes(1200))
            for i in range(3)
        ]
        + [("s9.cls", b"")],
    )
    return [
        Base("writer", writer_tar, False),
        Base("gnu", gnu_tar, False),
        Base("pax", pax_tar, False),
        Base("ustar", ustar_tar, False),
        Base("writer.gz", writer_tar, True),
        Base("pax.gz", pax_tar, True),
    ]


@dataclass
class Layout:
    """Where things are in a valid tar, read with :mod:`tarfile`."""

    headers: list[int]  # offset of every header block (incl. pax/GNU records and their data)
    members: list[tuple[str, int, int, int]]  # regular files: (name, first header, data, size)
    boundaries: list[int]  # offset where each entry's first header starts
    meta: list[tuple[int, bytes]]  # (offset, typeflag) of pax 'x' and GNU 'L' headers
    end: int  # offset of the end-of-archive block


def layout(raw: bytes) -> Layout:
    headers: list[int] = []
    members = []
    boundaries = []
    meta = []
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        infos = list(tar)
        end = tar.offset
    for info in infos:
        boundaries.append(info.offset)
        off = info.offset
        while off < info.offset_data - BLOCK + 1:
            typeflag = raw[off + 156 : off + 157]
            headers.append(off)
            if typeflag in (b"x", b"L", b"K", b"g"):
                meta.append((off, typeflag))
                size = int(raw[off + 124 : off + 136].split(b"\0")[0].strip() or b"0", 8)
                off += BLOCK + -(-size // BLOCK) * BLOCK
            else:
                off += BLOCK
        if info.isreg():
            members.append((info.name, info.offset, info.offset_data, info.size))
    return Layout(headers, members, boundaries, meta, end)


# --------------------------------------------------------------------------------------------
# mutants
# --------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    file: str
    base: str
    kind: str
    note: str
    gz: bool
    # members (names) the reader must yield before it fails, when the mutation makes a failure
    # certain (truncation, zero block): None when anything typed is acceptable.
    must_fail_after: list[str] | None = None
    original: list[str] = field(default_factory=list)


def _checksum(header: bytearray) -> None:
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header[:BLOCK])


def _set_field(raw: bytes, off: int, start: int, value: bytes, fix_checksum: bool) -> bytes:
    data = bytearray(raw)
    width = {124: 12, 148: 8, 100: 8, 156: 1, 257: 6, 0: 100}[start]
    data[off + start : off + start + width] = value[:width].ljust(width, b"\0")
    if fix_checksum:
        header = data[off : off + BLOCK]
        _checksum(header)
        data[off : off + BLOCK] = header
    return bytes(data)


def _pax_record(key: str, value: bytes) -> bytes:
    body = key.encode() + b"=" + value + b"\n"
    n = len(body) + 2
    while len(str(n)) + 1 + len(body) != n:
        n = len(str(n)) + 1 + len(body)
    return str(n).encode() + b" " + body


def _replace_meta(raw: bytes, off: int, body: bytes, claimed: int | None = None) -> bytes:
    """Give the pax/GNU record header at ``off`` a new body (and optionally a false size)."""
    old = int(raw[off + 124 : off + 136].split(b"\0")[0].strip() or b"0", 8)
    end = off + BLOCK + -(-old // BLOCK) * BLOCK
    header = bytearray(raw[off : off + BLOCK])
    size = len(body) if claimed is None else claimed
    if size < 8**11:
        header[124:136] = b"%011o\0" % size
    else:
        header[124:136] = b"\x80" + size.to_bytes(11, "big")
    _checksum(header)
    return raw[:off] + bytes(header) + body + bytes(-len(body) % BLOCK) + raw[end:]


GARBAGE_SIZES = [
    b"abcdefghijk\0",
    b"-0001000\0   ",
    b"-1\0",
    b"\xff" * 12,
    b"\xfe" + bytes(11),
    b"9999\0",
    b"0o17\0",
    b" 1_0\0",
    b"\x80" + (10**12).to_bytes(11, "big"),
    b"\x80" + (1 << 80).to_bytes(11, "big"),
    b"77777777777\0",
    b"\x80" + bytes(10) + b"\x01",
    bytes(12),
    b"        \0",
]

PAX_BODIES = [
    b"0 path=a.txt\n",
    b"99999999999 path=x.txt\n",
    b"5 path=abc.txt\n",
    _pax_record("path", b"no-newline.txt")[:-1],
    b"15 path=x.txt\n\0\0",
    b"+19 path=plus.txt\n",
    b"-19 path=minus.txt\n",
    b"0x13 path=hex.txt\n",
    b"18 nokeyvalue.txt\n",
    _pax_record("size", b"-5"),
    _pax_record("size", b"abc"),
    _pax_record("size", b"99999999999999"),
    _pax_record("size", b"9" * 5000),
    _pax_record("size", b"1000000"),
    _pax_record("path", b"\xff\xfe.txt"),
    _pax_record("path", b""),
    b"",
    b"\0" * 100,
    b" " * 30,
    b"999" + b" " * 5000,
]


def make_mutants(seed: int = SEED) -> list[tuple[Mutant, bytes]]:
    """At least 300 seeded mutants of :func:`base_shards`, each with its bytes."""
    rng = random.Random(seed)
    mutants: list[tuple[Mutant, bytes]] = []

    def add(base: Base, kind: str, note: str, data: bytes, must: list[str] | None = None):
        ext = ".tar.gz" if base.gz else ".tar"
        name = f"m{len(mutants):04d}-{base.label.replace('.gz', '')}-{kind}{ext}"
        names = [m[0] for m in layout(base.raw).members]
        mutants.append((Mutant(name, base.label, kind, note, base.gz, must, names), data))

    bases = base_shards()
    plain = [b for b in bases if not b.gz]
    zipped = [b for b in bases if b.gz]
    for b in bases:
        add(b, "valid", "unchanged", gzip.compress(b.raw, mtime=0) if b.gz else b.raw)

    for _ in range(70):  # random byte flips inside header blocks
        b = rng.choice(plain)
        lay = layout(b.raw)
        data = bytearray(b.raw)
        for _ in range(rng.choice([1, 1, 2, 3])):
            off = rng.choice(lay.headers) + rng.randrange(BLOCK)
            data[off] = rng.randrange(256)
        add(b, "flip", "header bytes", bytes(data))

    for _ in range(70):  # garbage in numeric fields and type flags, checksum fixed or not
        b = rng.choice(plain)
        lay = layout(b.raw)
        off = rng.choice(lay.headers)
        start = rng.choice([124, 124, 124, 148, 100, 156, 257])
        value = {
            124: rng.choice(GARBAGE_SIZES),
            148: rng.choice([b"abcdefg\0", b"-12345\0", b"\xff" * 8, bytes(8)]),
            100: rng.choice([b"zzzzzzz\0", b"-777\0"]),
            156: bytes([rng.choice(b"0123456789LKxXgSAZ\0\xff")]),
            257: rng.choice([b"ustaR\0", b"\0\0\0\0\0\0", b"ustar\0"]),
        }[start]
        fix = rng.random() < 0.6
        add(
            b,
            "field",
            f"field {start} = {value!r} fix={fix}",
            _set_field(b.raw, off, start, value, fix),
        )

    for _ in range(40):  # huge and negative sizes in regular member headers, checksum fixed
        b = rng.choice(plain)
        lay = layout(b.raw)
        name, first, data_off, _ = rng.choice(lay.members)
        header_off = data_off - BLOCK
        value = rng.choice(
            [
                b"\x80" + (10**12).to_bytes(11, "big"),
                b"\x80" + (1 << 62).to_bytes(11, "big"),
                b"\x80" + (5 << 30).to_bytes(11, "big"),
                b"77777777777\0",
                b"%011o\0" % (len(b.raw) * 3),
                b"-0001000\0",
                b"\xff" * 12,
                b"-0000001\0",
            ]
        )
        add(b, "size", f"{name}: size {value!r}", _set_field(b.raw, header_off, 124, value, True))

    for _ in range(60):  # truncation at random offsets: must fail, having yielded what precedes
        b = rng.choice(plain)
        lay = layout(b.raw)
        cut = rng.randrange(1, lay.end + BLOCK)
        before = [n for n, _, d, s in lay.members if d + s + (-s % BLOCK) <= cut]
        last = lay.members[-1]
        # a cut inside the last member's padding may still yield that member before failing
        must = None if cut > last[2] + last[3] - 1 else before
        add(b, "truncate", f"cut at {cut}", b.raw[:cut], must)

    pax = next(b for b in plain if b.label == "pax")
    gnu = next(b for b in plain if b.label == "gnu")
    for i in range(44):  # malformed pax records and lying pax/GNU record sizes
        if i < 2 * len(PAX_BODIES):
            off, _ = rng.choice([m for m in layout(pax.raw).meta if m[1] == b"x"])
            body = PAX_BODIES[i % len(PAX_BODIES)]
            if i >= len(PAX_BODIES):  # the same body followed by a valid record
                body = body + _pax_record("mtime", b"1700000000")
            add(pax, "pax", f"body {body[:40]!r}", _replace_meta(pax.raw, off, body))
        else:
            off, _ = rng.choice(layout(pax.raw).meta)
            claim = rng.choice([10**12, 1 << 40, 3 << 30, 100_000])
            add(pax, "pax", f"record claims {claim}", _replace_meta(pax.raw, off, b"", claim))
    for body, claim in [
        (b"x" * 300, None),  # no NUL terminator
        (b"", None),
        (b"\0" * 40, None),
        (b"", 10**12),
        (b"", 1 << 62),
        (b"", 2 << 30),
        (b"a" * 5000 + b"\0", None),
        (b"\xff\xfe\0", None),
    ]:
        for _ in range(2):
            off, _ = rng.choice([m for m in layout(gnu.raw).meta if m[1] == b"L"])
            add(
                gnu,
                "gnu",
                f"L {body[:20]!r} claim={claim}",
                _replace_meta(gnu.raw, off, body, claim),
            )

    for _ in range(40):  # a zero block (or two) before a member: must fail after the ones before
        b = rng.choice(plain)
        lay = layout(b.raw)
        k = rng.randrange(len(lay.boundaries))
        at = lay.boundaries[k]
        before = [n for n, first, _, _ in lay.members if first < at]
        if rng.random() < 0.7:
            data = b.raw[:at] + bytes(rng.choice([BLOCK, 2 * BLOCK])) + b.raw[at:]
            note = f"zero block inserted at {at}"
        else:
            data = b.raw[:at] + bytes(BLOCK) + b.raw[at + BLOCK :]
            note = f"header at {at} zeroed"
        # a zeroed header whose entry was the last before the end leaves only zeros behind
        rest = data[at:]
        add(b, "zero", note, data, before if rest.strip(b"\0") else None)

    for _ in range(50):  # corrupt gzip streams
        b = rng.choice(zipped)
        gz = bytearray(gzip.compress(b.raw, mtime=0))
        how = rng.choice(["flip", "flip", "cut", "append", "header"])
        if how == "flip":
            for _ in range(rng.choice([1, 2, 4])):
                gz[rng.randrange(10, len(gz))] ^= 1 << rng.randrange(8)
        elif how == "cut":
            gz = gz[: rng.randrange(1, len(gz))]
        elif how == "append":
            gz += rng.choice([b"garbage!" * 20, b"\x1f\x8b" + rng.randbytes(50), bytes(30)])
        else:
            gz[rng.randrange(2, 10)] = rng.randrange(256)
        add(b, "gzip", how, bytes(gz))

    for _ in range(20):  # damage inside member data only: must read like tarfile
        b = rng.choice(plain)
        lay = layout(b.raw)
        name, _, data_off, size = rng.choice([m for m in lay.members if m[3]])
        data = bytearray(b.raw)
        data[data_off + rng.randrange(size)] ^= 0xFF
        add(b, "data", name, bytes(data))
    return mutants


def write_mutants(directory: str, seed: int = SEED) -> list[Mutant]:
    os.makedirs(directory, exist_ok=True)
    out = []
    for mutant, data in make_mutants(seed):
        with open(os.path.join(directory, mutant.file), "wb") as f:
            f.write(data)
        out.append(mutant)
    with open(os.path.join(directory, "mutants.json"), "w") as f:
        json.dump([asdict(m) for m in out], f)
    return out


# --------------------------------------------------------------------------------------------
# child process: read every mutant under a time and memory limit
# --------------------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` inside can swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


def limit_memory(headroom: int) -> int:
    """Cap the address space at what the process uses now plus ``headroom``; return the cap."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def guarded(fn: Callable[[], Iterable[tuple[str, bytes]]], typed: tuple[type, ...]) -> dict:
    """Run ``fn`` (yielding (name, data)) under the alarm; describe how it ended."""
    members: list[list[Any]] = []
    datas: list[bytes] = []
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        for name, data in fn():
            members.append([name, hashlib.sha1(data).hexdigest()])
            datas.append(data)
        result: dict[str, Any] = {"status": "ok"}
    except Hang:
        result = {"status": "hang"}
    except MemoryError as exn:
        result = {"status": "memory", "type": "MemoryError", "message": str(exn)[:300]}
    except typed as exn:
        result = {
            "status": "error",
            "type": type(exn).__name__,
            "url": getattr(exn, "url", None),
            "member": getattr(exn, "member", None),
            "message": str(exn)[:300],
        }
    except Exception as exn:
        result = {"status": "untyped", "type": type(exn).__name__, "message": str(exn)[:300]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["members"] = members
    result["_datas"] = datas
    return result


def _tarfile_view(raw: bytes) -> dict | None:
    """What tarfile reads cleanly: regular members and the end offset; None if it fails.

    :mod:`tarfile` itself is not safe on these mutants (some take minutes): it runs under the
    alarm too, and members claiming more bytes than the mutant has count as a failure.
    """
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = []
            for info in tar:
                if not 0 <= info.size <= len(raw):  # tarfile loops forever on negative sizes
                    return None
                if info.isreg():
                    f = tar.extractfile(info)
                    assert f is not None
                    members.append([info.name, hashlib.sha1(f.read()).hexdigest()])
            return {"members": members, "end": tar.offset}
    except (Exception, Hang):
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _gunzip_prefix(data: bytes) -> tuple[bytes, bool]:
    """As much of a (possibly corrupt) gzip stream as decompresses, in 4 KiB steps, and
    whether non-zero bytes follow the first gzip member (the reader reports those)."""
    out = []
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    junk = False
    try:
        for i in range(0, len(data), 4096):
            out.append(d.decompress(data[i : i + 4096]))
            if d.eof:
                junk = bool((d.unused_data + data[i + 4096 :]).strip(b"\0"))
                break
    except zlib.error:
        pass
    return b"".join(out), junk


def _from_bytes(data: bytes, url: str, **kw: Any) -> Iterator[tuple[str, bytes]]:
    from cloudwds.tario import iter_members

    return iter_members(io.BytesIO(data), url, **kw)


def _from_file(path: str) -> Iterator[tuple[str, bytes]]:
    from cloudwds.tario import iter_members

    with open(path, "rb", buffering=0) as f:  # a real file: small reads, readinto, seek
        yield from iter_members(f, path, bufsize=4096)


def _through_webdataset(path: str) -> Iterator[tuple[str, bytes]]:
    import cloudwds

    for sample in cloudwds.WebDataset(path, shardshuffle=False, empty_check=False):
        for k, v in sample.items():
            if not k.startswith("__"):
                yield f"{sample['__key__']}.{k}", v


def _through_index(path: str) -> list[tuple[str, bytes]]:
    from cloudwds.index import scan_shard

    seen: list[tuple[str, bytes]] = []
    scan_shard(path, checksum="sha256", on_member=lambda n, d: seen.append((n, d)))
    return seen


def evaluate(directory: str) -> list[dict]:
    """Read every mutant of ``directory`` in this process; one result dict per mutant."""
    import cloudwds  # noqa: F401  (imported before the memory limit is set)
    from cloudwds.errors import ShardError

    signal.signal(signal.SIGALRM, _on_alarm)
    with open(os.path.join(directory, "mutants.json")) as f:
        mutants = json.load(f)
    limit_memory(MEMORY_HEADROOM)
    typed = (ShardError,)
    results = []
    for m in mutants:
        path = os.path.join(directory, m["file"])
        with open(path, "rb") as f:
            data = f.read()
        raw, junk = _gunzip_prefix(data) if m["gz"] else (data, False)

        out = {
            "file": m["file"],
            "reader": guarded(partial(_from_bytes, data, path), typed),
            "file_reader": guarded(partial(_from_file, path), typed),
            "checked": guarded(partial(_from_bytes, data, path, verify_checksums=True), typed),
            "index": guarded(partial(_through_index, path), typed),
            "webdataset": guarded(partial(_through_webdataset, path), typed),
            "tarfile": _tarfile_view(raw),
            "junk_after_gzip": junk,
        }
        if out["tarfile"] is not None:
            end = out["tarfile"]["end"]
            out["zeros_after_end"] = not raw[end:].strip(b"\0")
            out["end_block_complete"] = len(raw) >= end + BLOCK
        datas = out["reader"].pop("_datas")
        out["in_mutant"] = all(not d or raw.find(d) >= 0 for d in datas)
        for key in ("file_reader", "checked", "index", "webdataset"):
            out[key].pop("_datas")
        results.append(out)
    return results


def run_child(directory: str, timeout: float = 300) -> list[dict]:
    """Evaluate ``directory`` in a fresh interpreter (memory limits stay out of this process)."""
    out = os.path.join(directory, "results.json")
    subprocess.run(
        [sys.executable, os.path.abspath(__file__), "child", directory, out],
        check=True,
        timeout=timeout,
    )
    with open(out) as f:
        return json.load(f)


def run_verify(directory: str, files: list[str], timeout: float = 300) -> str:
    """``cloudwds verify`` on every mutant in one command, under a 4 GiB address-space limit."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "cloudwds", "verify", "--workers", "2", *files],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.stdout


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


def _split(name: str) -> tuple[str, str] | None:
    from cloudwds.samples import split_name

    return split_name(name)


def check_mutant(m: dict, r: dict) -> list[str]:
    """Every way the results for mutant ``m`` break the rules; empty if none."""
    bad = []
    path_suffix = m["file"]
    for how in ("reader", "file_reader", "checked", "index", "webdataset"):
        out = r[how]
        if out["status"] in ("hang", "memory", "untyped"):
            bad.append(f"{how}: {out['status']} {out.get('type')} {out.get('message')}")
        if out["status"] == "error":
            if not (out["url"] or "").endswith(path_suffix):
                bad.append(f"{how}: error url {out['url']!r}")
            if not out["member"]:
                bad.append(f"{how}: error without member: {out['message']}")
    reader = r["reader"]
    if reader["status"] in ("ok", "error") and not r["in_mutant"]:
        bad.append("reader yielded bytes that are not in the mutant")
    for how in ("file_reader", "index"):  # other buffer sizes and streams: the same result
        keys = ["status", "type"]
        # Corrupt gzip shows at the gzip trailer, reached at different members per buffer size.
        if not (m["gz"] and reader["status"] == "error"):
            keys.append("member")
            if how == "file_reader" or reader["status"] == "ok":  # scan_shard's list is lost
                keys.append("members")
        if {k: r[how].get(k) for k in keys} != {k: reader.get(k) for k in keys}:
            bad.append(f"{how} differs from reader: {r[how]} vs {reader}")
    if reader["status"] == "error" and r["checked"]["status"] != "error":
        bad.append("verify_checksums=True passed where the reader failed")

    # webdataset: the same members grouped into samples, the same error
    wds = r["webdataset"]
    fielded = []
    for name, sha in reader["members"]:
        parts = _split(name)
        if parts is not None:
            fielded.append([f"{parts[0]}.{parts[1]}", sha])
    if wds["status"] == "error" and wds["type"] == "DuplicateMemberError":
        pass  # grouping found two equal fields: the reader does not group
    elif wds["status"] != reader["status"] or wds.get("member") != reader.get("member"):
        bad.append(f"WebDataset ended differently: {wds} vs {reader}")
    elif wds["members"] != fielded[: len(wds["members"])] or (
        wds["status"] == "ok" and wds["members"] != fielded
    ):
        bad.append("WebDataset yielded different samples than the reader")

    # no silent loss
    tf = r["tarfile"]
    if tf is not None and [n for n, _ in tf["members"]] == m["original"]:
        if r["junk_after_gzip"]:  # garbage after the gzip stream: reported, after the members
            if reader["type"] != "TarFormatError" or reader["members"] != tf["members"]:
                bad.append(f"data after the gzip stream not reported: {reader}")
        elif r["zeros_after_end"] and not r["end_block_complete"]:  # cut inside the end marker
            if reader["type"] != "TruncatedShardError" or reader["members"] != tf["members"]:
                bad.append(f"tarfile reads all members, the end marker is cut, but {reader}")
        elif r["zeros_after_end"]:
            if reader["status"] != "ok" or reader["members"] != tf["members"]:
                bad.append(f"tarfile reads it cleanly but the reader gave {reader}")
        elif reader["status"] != "error" or "end-of-archive" not in reader["message"]:
            bad.append(f"data after the end-of-archive block not reported: {reader}")
    if m["must_fail_after"] is not None:
        if reader["status"] != "error":
            bad.append(f"{m['kind']} mutant did not fail: {reader}")
        elif [n for n, _ in reader["members"]] != m["must_fail_after"]:
            bad.append(f"yielded {reader['members']} before failing, not {m['must_fail_after']}")
    if m["kind"] in ("valid", "data") and reader["status"] != "ok":
        bad.append(f"intact structure but {reader}")
    return bad


def verify_failures(stdout: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("FAIL "):
            url, _, text = line[5:].partition(": ")
            lines.setdefault(url, []).append(text)
    return lines


def test_fuzzed_shards_terminate_and_fail_typed_naming_url_and_member(tmp_path):
    mutants = write_mutants(str(tmp_path))
    assert len(mutants) >= 300
    kinds = {m.kind for m in mutants}
    assert kinds >= {"flip", "field", "size", "truncate", "pax", "gnu", "zero", "gzip", "data"}
    results = run_child(str(tmp_path))
    assert [r["file"] for r in results] == [m.file for m in mutants]

    problems = []
    for m, r in zip(mutants, results, strict=True):
        problems += [f"{m.file} ({m.note}): {p}" for p in check_mutant(asdict(m), r)]
    assert problems == [], "\n".join(problems[:20])

    # the mutants really are hostile: most fail, and every failure kind shows up
    statuses = [r["reader"]["status"] for r in results]
    assert statuses.count("error") > len(mutants) // 2
    types = {r["reader"].get("type") for r in results}
    assert {"TarFormatError", "TruncatedShardError", "MemberTooLargeError"} <= types

    # cloudwds verify: every shard the checking reader rejects is a FAIL line naming its
    # member; every other shard has no read error
    failures = verify_failures(run_verify(str(tmp_path), [m.file for m in mutants]))
    for m, r in zip(mutants, results, strict=True):
        checked = r["checked"]
        lines = failures.get(m.file, [])
        if checked["status"] == "error":
            assert any(
                line.startswith(checked["type"]) and f"member={checked['member']!r}" in line
                for line in lines
            ), (m.file, checked, lines)
        else:
            assert not any("Error" in line.split(":")[0] for line in lines), (m.file, lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        res = evaluate(sys.argv[2])
        with open(sys.argv[3], "w") as f:
            json.dump(res, f)
    else:
        sys.exit(f"usage: {sys.argv[0]} child DIR RESULTS.json")
