"""cloudwds.tario: the streaming tar reader against tarfile and GNU tar, and the tar writer."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import tarfile
import tracemalloc

import pytest
from conftest import tar_bytes, write_tar

from cloudwds.errors import MemberTooLargeError, ShardError, TarFormatError, TruncatedShardError
from cloudwds.tario import (
    BLOCK,
    DEFAULT_MAX_MEMBER_SIZE,
    TarStreamWriter,
    gunzip_member,
    iter_members,
    resolve_max_member_size,
)


def read_all(data: bytes, url: str | None = "mem.tar", **kw) -> list[tuple[str, bytes]]:
    return list(iter_members(io.BytesIO(data), url, **kw))


def tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    """What :mod:`tarfile` sees: regular files in archive order."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for info in tar:
            if info.isreg():
                f = tar.extractfile(info)
                assert f is not None
                out.append((info.name, f.read()))
    return out


class Trickle(io.RawIOBase):
    """A stream returning at most ``chunk`` bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes, chunk: int):
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._chunk if n < 0 else min(n, self._chunk)
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(out)
        return out


MEMBERS = [("a.txt", b"hello"), ("a.cls", b"3"), ("b.txt", b"x" * 1000), ("b.cls", b"")]


# -- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_formats_read_like_tarfile(fmt):
    data = tar_bytes(MEMBERS, format=fmt)
    assert read_all(data) == MEMBERS
    assert read_all(data) == tarfile_members(data)


def test_gnu_long_names_over_100_chars():
    long_dir = "d" * 60 + "/" + "e" * 60
    members = [(f"{long_dir}/sample{i}." + "x" * 120 + ".txt", bytes([i]) * i) for i in range(3)]
    data = tar_bytes(members, format=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data  # the names really went through GNU 'L' records
    got = read_all(data)
    assert got == members
    assert all(len(name) > 100 for name, _ in got)


def test_pax_path_records_for_long_and_unicode_names():
    members = [("p/" + "z" * 150 + ".json", b"{}"), ("caf\u00e9/\u00e9t\u00e9.txt", b"ok")]
    data = tar_bytes(members, format=tarfile.PAX_FORMAT)
    assert b"path=" in data  # pax extended headers carry the names
    assert read_all(data) == members


def test_ustar_prefix_field_joins_directory_and_name():
    name = "/".join([f"dir{i:02d}" for i in range(20)]) + "/file.txt"  # 129 chars, split
    assert 100 < len(name) < 255
    data = tar_bytes([(name, b"deep")], format=tarfile.USTAR_FORMAT)
    header = data[:BLOCK]
    assert header[345] != 0  # tarfile used the prefix field
    assert read_all(data) == [(name, b"deep")]


def test_pax_size_record_overrides_header_size():
    # A pax 'size' record (used for members >= 8 GiB) wins over the octal header field.
    payload = b"0123456789" * 70
    info = tarfile.TarInfo("big.bin")
    info.size = len(payload)
    pax = tarfile.TarInfo("././@PaxHeader")
    record = f"size={len(payload)}\n"
    length = len(record) + 3
    length = len(f"{length} {record}")
    body = f"{length} {record}".encode()
    pax.size = len(body)
    pax.type = tarfile.XHDTYPE
    header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    header[124:136] = b"00000000001\0"  # lie: 1 byte
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    out = io.BytesIO()
    out.write(pax.tobuf(format=tarfile.USTAR_FORMAT))
    out.write(body + bytes(-len(body) % BLOCK))
    out.write(bytes(header))
    out.write(payload + bytes(-len(payload) % BLOCK))
    out.write(bytes(2 * BLOCK))
    assert read_all(out.getvalue()) == [("big.bin", payload)]


def test_gnu_header_with_atime_is_not_a_ustar_prefix(tmp_path):
    # GNU ("ustar  ") headers keep atime/ctime where POSIX ustar has the name prefix.
    data = bytearray(tar_bytes([("k.txt", b"v")], format=tarfile.GNU_FORMAT))
    assert data[257:265] == b"ustar  \0"
    data[345:357] = b"14772224350\0"  # an atime, as GNU tar --incremental writes
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:BLOCK])
    path = tmp_path / "gnu-atime.tar"
    path.write_bytes(data)
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, check=True, text=True)
    assert listing.stdout.split() == ["k.txt"]  # GNU tar's reading (tarfile glues the atime on)
    assert read_all(bytes(data)) == [("k.txt", b"v")]


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_gzip_compressed_archives(tmp_path, suffix, mode):
    path = write_tar(tmp_path / f"x{suffix}", MEMBERS, mode=mode)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
        f.seek(0)
        assert list(iter_members(f, path)) == MEMBERS


def test_gzip_large_members_and_concatenated_members():
    big = random.Random(1).randbytes(2_500_000)  # incompressible: many decompression rounds
    zeros = bytes(3_000_000)  # compresses 1000:1, must not inflate into one huge read
    members = [("a.bin", b"x"), ("b.bin", big), ("c.bin", b"y"), ("d.bin", zeros)]
    raw = tar_bytes(members)
    gz = gzip.compress(raw)
    assert read_all(gz, bufsize=4096) == members
    assert list(iter_members(Trickle(gz, 1000), "t")) == members
    # Zero padding and an empty gzip member after the archive are accepted, as gzip does.
    assert read_all(gz + bytes(100) + gzip.compress(b"")) == members
    # A tar split over two gzip members (as pigz/concatenation produce) reads as one stream.
    half = len(raw) // 2
    assert read_all(gzip.compress(raw[:half]) + gzip.compress(raw[half:])) == members


def test_gnu_tar_archive_with_dirs_links_and_meta(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "a.json").write_bytes(b"{}")
    (src / "sub" / "empty.bin").write_bytes(b"")
    (src / "__meta__").write_bytes(b"ignored")
    (src / ("L" * 130 + ".txt")).write_bytes(b"long")
    (src / "link.txt").symlink_to("sub/a.txt")
    os.link(src / "sub" / "a.txt", src / "hard.txt")
    for fmt in ("gnu", "posix", "ustar"):
        if fmt == "ustar":  # ustar cannot store the 134-char name
            (src / ("L" * 130 + ".txt")).unlink()
        out = tmp_path / f"{fmt}.tar"
        names = sorted(os.listdir(src))
        subprocess.run(
            ["tar", f"--format={fmt}", "--sort=name", "-cf", str(out), "-C", str(src), *names],
            check=True,
        )
        data = out.read_bytes()
        got = read_all(data)
        expected = [(n, d) for n, d in tarfile_members(data) if n != "__meta__"]
        assert got == expected
        got_names = [n for n, _ in got]
        assert "sub/a.json" in got_names and "sub/empty.bin" in got_names
        assert "__meta__" not in got_names and "link.txt" not in got_names  # skipped
        assert dict(got)["sub/empty.bin"] == b""
        # GNU tar stores the second copy of a hard link as a link member: skipped.
        assert [d for n, d in got if n in ("hard.txt", "sub/a.txt")] == [b"alpha"]


def test_directories_links_and_metadata_members_are_skipped():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in [("__key__", b"meta"), ("dir/__x__", b"kept"), ("dir/a.txt", b"A")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        sym = tarfile.TarInfo("dir/b.txt")
        sym.type = tarfile.SYMTYPE
        sym.linkname = "a.txt"
        tar.addfile(sym)
        hard = tarfile.TarInfo("dir/c.txt")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "dir/a.txt"
        tar.addfile(hard)
        fifo = tarfile.TarInfo("dir/fifo")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    data = out.getvalue()
    assert read_all(data) == [("dir/__x__", b"kept"), ("dir/a.txt", b"A")]
    assert read_all(data, skip_meta=False) == [
        ("__key__", b"meta"),
        ("dir/__x__", b"kept"),
        ("dir/a.txt", b"A"),
    ]


def test_zero_byte_members():
    members = [("a.x", b""), ("a.y", b""), ("b.x", b"1"), ("c.x", b"")]
    assert read_all(tar_bytes(members)) == members


# -- buffering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bufsize", [1, 100, 511, 512, 513, 1000, 1536, 4096])
def test_members_crossing_buffer_boundaries(bufsize):
    sizes = [0, 1, 100, 511, 512, 513, 1023, 1024, 1025, 3000, 7777, 0, 5]
    members = [(f"m{i:02d}.bin", random.Random(i).randbytes(n)) for i, n in enumerate(sizes)]
    data = tar_bytes(members)
    assert read_all(data, bufsize=bufsize) == members
    assert list(iter_members(Trickle(data, 700), "t", bufsize=bufsize)) == members


@pytest.mark.parametrize("bufsize", [512, 4096, 1 << 20])
def test_large_members_direct_read(bufsize):
    rng = random.Random(7)
    sizes = [256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1, 300_000, 1_000_003, 10]
    members = [(f"big{i}.bin", rng.randbytes(n)) for i, n in enumerate(sizes)]
    data = tar_bytes(members)
    assert read_all(data, bufsize=bufsize) == members
    # a stream that returns short reads forces the read-until-complete loop
    assert list(iter_members(Trickle(data, 65_000), "t", bufsize=bufsize)) == members


# -- errors ------------------------------------------------------------------------------------


def member_spans(data: bytes) -> list[tuple[str, int, int, int]]:
    """(name, header offset, data offset, end of padded data) per member, via tarfile."""
    spans = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            end = info.offset_data + (info.size + BLOCK - 1) // BLOCK * BLOCK
            spans.append((info.name, info.offset, info.offset_data, end))
    return spans


def expected_cut_member(spans, cut: int) -> str | None:
    previous = None
    for name, header, start, end in spans:
        if cut < start:  # inside this member's header
            # the name is known once its NUL terminator has arrived
            return name if cut - header > len(name) else previous
        if cut < end or (cut == end and name == spans[-1][0]):
            return name
        previous = name
    return previous


def test_truncation_at_many_cut_points_names_url_and_member():
    members = [("s0.txt", b"a" * 700), ("s0.cls", b"1"), ("s1.txt", b"b" * 1500), ("s1.cls", b"")]
    data = tar_bytes(members)
    spans = member_spans(data)
    end_of_members = spans[-1][3]
    cuts = sorted(
        set(range(1, end_of_members + BLOCK, 37))
        | {s + d for _, h, st, e in spans for s in (h, st, e) for d in (-1, 0, 1)}
    )
    checked = 0
    for cut in cuts:
        if cut <= 0 or cut > end_of_members + BLOCK:
            continue
        chunk = data[:cut]
        if cut >= end_of_members + BLOCK:  # the first end-of-archive block is complete
            assert read_all(chunk) == members
            continue
        if cut < 262:  # not even the magic of the first header: not recognisable as tar
            with pytest.raises(TarFormatError) as info:
                read_all(chunk, url="shard-7.tar")
            assert "shard-7.tar" in str(info.value)
            continue
        with pytest.raises(TruncatedShardError) as info:
            read_all(chunk, url="shard-7.tar", bufsize=1000)
        member = expected_cut_member(spans, cut)
        assert info.value.url == "shard-7.tar", cut
        assert info.value.member == member, (cut, str(info.value))
        assert "shard-7.tar" in str(info.value) and f"member={member!r}" in str(info.value)
        checked += 1
    assert checked > 80


def test_truncated_gzip_names_the_member():
    members = [("a.bin", random.Random(3).randbytes(20_000)), ("b.bin", b"tail")]
    gz = gzip.compress(tar_bytes(members))
    for cut in range(1000, len(gz) - 30, 997):
        with pytest.raises(TruncatedShardError) as info:
            read_all(gz[:cut], url="x.tar.gz")
        assert info.value.member in ("a.bin", "b.bin")
        assert "x.tar.gz" in str(info.value)


def test_missing_end_of_archive_marker():
    data = tar_bytes([("a.txt", b"abc")])
    with pytest.raises(TruncatedShardError, match="end-of-archive") as info:
        read_all(data[: 2 * BLOCK], url="u.tar")
    assert info.value.member == "a.txt"


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a tar file at all\n" * 40,
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        random.Random(5).randbytes(5000),
        b"short",
    ],
)
def test_non_tar_bytes_raise_tar_format_error(garbage):
    with pytest.raises(TarFormatError) as info:
        read_all(garbage, url="bad.tar")
    assert not isinstance(info.value, TruncatedShardError)
    assert "bad.tar" in str(info.value)


def test_empty_stream_is_not_a_tar():
    with pytest.raises(TarFormatError, match="empty"):
        read_all(b"")


def v7_archive(members) -> bytearray:
    """A pre-POSIX (v7) archive: no ustar magic, so every header's checksum is verified."""
    data = bytearray(tar_bytes(members, format=tarfile.USTAR_FORMAT))
    for _, header, _, _ in member_spans(bytes(data)):
        data[header + 257 : header + 265] = bytes(8)
        data[header + 148 : header + 156] = b"        "
        data[header + 148 : header + 156] = b"%06o\0 " % sum(data[header : header + BLOCK])
    return data


def test_v7_headers_with_good_checksums_read():
    members = [("a.txt", b"one"), ("b.txt", b"two")]
    data = v7_archive(members)
    assert read_all(bytes(data)) == members


def test_bad_checksum_on_non_ustar_header():
    members = [("a.txt", b"one"), ("b.txt", b"two")]
    data = v7_archive(members)
    first_bad = bytearray(data)
    first_bad[0] = ord("z")
    with pytest.raises(TarFormatError, match="checksum") as info:
        read_all(bytes(first_bad), url="v7.tar")
    assert info.value.url == "v7.tar"
    second = member_spans(bytes(data))[1][1]
    second_bad = bytearray(data)
    second_bad[second + 1] ^= 1
    with pytest.raises(TarFormatError, match="checksum") as info:
        read_all(bytes(second_bad), url="v7.tar")
    assert info.value.member == "a.txt"  # the last good member locates the damage
    assert "v7.tar" in str(info.value) and "a.txt" in str(info.value)


def test_ustar_checksums_are_trusted_unless_verified():
    data = bytearray(tar_bytes([("a.txt", b"one")]))
    data[148:154] = b"000001"  # wrong checksum, ustar magic intact
    assert read_all(bytes(data)) == [("a.txt", b"one")]
    with pytest.raises(TarFormatError):
        read_all(bytes(data), verify_checksums=True)


def test_signed_checksums_are_accepted():
    data = bytearray(v7_archive([("\u00e9.txt", b"e")]))  # a byte >= 128 in the name
    signed = sum(b - 256 if b >= 128 else b for b in data[:148] + b" " * 8 + data[156:BLOCK])
    data[148:156] = b"%06o\0 " % signed
    assert read_all(bytes(data)) == [("\u00e9.txt", b"e")]


# -- property: same members as tarfile on random archives --------------------------------------


def random_archive(seed: int) -> bytes:
    rng = random.Random(seed)
    fmt = rng.choice([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i in range(rng.randrange(0, 30)):
            depth = rng.randrange(0, 3)
            parts = [rng.choice(["d", "dir", "x" * rng.randrange(1, 60)]) for _ in range(depth)]
            base = f"k{i}" + ("y" * rng.randrange(0, 90) if fmt != tarfile.USTAR_FORMAT else "")
            name = "/".join(parts + [f"{base}.{rng.choice(['txt', 'jpg', 'seg.png', 'cls'])}"])
            if fmt == tarfile.PAX_FORMAT and rng.random() < 0.2:
                name = "\u00fc" + name
            kind = rng.random()
            info = tarfile.TarInfo(name)
            if kind < 0.1:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            if kind < 0.15:
                info.type = tarfile.SYMTYPE
                info.linkname = "target"
                tar.addfile(info)
                continue
            size = rng.choice([0, 1, 511, 512, 513, rng.randrange(0, 5000)])
            if rng.random() < 0.03:
                size = rng.randrange(256 * 1024, 400 * 1024)
            info.size = size
            tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    data = out.getvalue()
    return gzip.compress(data) if rng.random() < 0.25 else data


@pytest.mark.parametrize("seed", range(40))
def test_random_archives_match_tarfile(seed):
    data = random_archive(seed)
    bufsize = random.Random(seed).choice([512, 1000, 8192, 1 << 20])
    assert read_all(data, bufsize=bufsize) == tarfile_members(data)


# -- writing -----------------------------------------------------------------------------------


def test_tar_stream_writer_output_reads_everywhere(tmp_path):
    out = io.BytesIO()
    writer = TarStreamWriter(out, mtime=1_700_000_000)
    long_name = "n" * 150 + ".txt"
    members = [("a.txt", b"abc"), (long_name, b"long"), ("b.bin", bytes(513))]
    for name, data in members:
        writer.add(name, data)
    writer.finish()
    data = out.getvalue()
    assert len(data) % BLOCK == 0
    assert writer.bytes_written == len(data)
    assert tarfile_members(data) == members
    assert read_all(data) == members
    path = tmp_path / "w.tar"
    path.write_bytes(data)
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, check=True, text=True)
    assert listing.stdout.split() == [n for n, _ in members]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember("a.txt")
        assert info.mtime == 1_700_000_000 and info.mode == 0o444


def test_errors_are_shard_errors():
    assert issubclass(TarFormatError, ShardError) and issubclass(TruncatedShardError, ShardError)


# -- hostile and damaged input (issue 10) ------------------------------------------------------


def pax_header(body: bytes) -> bytes:
    """A pax extended header block with ``body`` as its records, padded."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(body)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + body + bytes(-len(body) % BLOCK)


def with_size_field(data: bytes, header: int, field: bytes) -> bytes:
    """``data`` with the size field of the header at offset ``header`` replaced (checksum fixed)."""
    out = bytearray(data)
    out[header + 124 : header + 136] = field.ljust(12, b"\0")
    out[header + 148 : header + 156] = b"        "
    out[header + 148 : header + 156] = b"%06o\0 " % sum(out[header : header + BLOCK])
    return bytes(out)


TWO = [("a.txt", b"hello"), ("b.txt", b"world")]


@pytest.mark.parametrize(
    "body",
    [
        b"0 path=a.txt\n",  # length 0 never advanced: an endless loop before
        b"5 path=a.txt\n",  # shorter than its own prefix
        b"99999 path=a.txt\n",  # longer than the header
        b"13 path=a.txt",  # no newline
        b"-13 path=a.txt\n",
        b"xx path=a.txt\n",
        b"12 noequals\n",
        b"13 size=-5\n",
        b"14 size=abc\n",
    ],
)
def test_malformed_pax_records_fail_typed_and_terminate(body):
    data = pax_header(body) + tar_bytes(TWO)
    with pytest.raises(TarFormatError, match="pax") as info:
        read_all(data, url="p.tar")
    assert info.value.url == "p.tar"
    assert info.value.member == "<header at offset 0>"  # nothing read before it
    # after a member, the error names that member
    data = tar_bytes(TWO)[:1024] + pax_header(body) + tar_bytes(TWO)[1024:]
    with pytest.raises(TarFormatError, match="pax") as info:
        read_all(data, url="p.tar")
    assert info.value.member == "a.txt"


def test_pax_padding_and_unknown_keys_are_fine():
    body = b"20 mtime=1700000000\n" + b"20 path=renamed.txt\n" + bytes(30)
    data = pax_header(body) + tar_bytes([("a.txt", b"hello")])
    assert read_all(data) == [("renamed.txt", b"hello")]


@pytest.mark.parametrize(
    "field",
    [b"-0001000", b"-1", b"\xff" * 12, b"\xfe" + bytes(11), b"abcdefghijk", b"9999", b"0x10"],
)
def test_negative_and_garbage_sizes_fail_typed_naming_the_member(field):
    data = with_size_field(tar_bytes(TWO), BLOCK * 2, field)  # the header of b.txt
    got = []
    with pytest.raises(TarFormatError, match="bad size field") as info:
        for member in iter_members(io.BytesIO(data), "s.tar"):
            got.append(member)
    assert got == [("a.txt", b"hello")]
    assert (info.value.url, info.value.member) == ("s.tar", "b.txt")
    assert "offset 1024" in str(info.value)


def test_huge_claimed_size_is_refused_before_reading():
    data = with_size_field(tar_bytes(TWO), 0, b"\x80" + (10**12).to_bytes(11, "big"))
    with pytest.raises(MemberTooLargeError, match="WDS_MAX_MEMBER_SIZE") as info:
        read_all(data, url="h.tar")
    assert (info.value.url, info.value.member) == ("h.tar", "a.txt")
    assert isinstance(info.value, ShardError)


def test_lying_size_allocates_only_what_arrives(tmp_path):
    # 6 GiB claimed (under the default limit), 1 KiB present: a truncation, not a 6 GiB buffer.
    data = with_size_field(tar_bytes(TWO), 0, b"\x80" + (6 << 30).to_bytes(11, "big"))
    path = tmp_path / "lie.tar"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        for stream in (io.BytesIO(data), open(path, "rb", buffering=0)):
            with stream, pytest.raises(TruncatedShardError) as info:
                list(iter_members(stream, "lie.tar"))
            assert info.value.member == "a.txt"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20


def test_max_member_size_argument_and_environment(monkeypatch):
    data = tar_bytes([("a.txt", b"x" * 2000), ("b.txt", b"y" * 100)])
    with pytest.raises(MemberTooLargeError) as info:
        read_all(data, url="m.tar", max_member_size=1000)
    assert info.value.member == "a.txt" and "1000" in str(info.value)
    monkeypatch.setenv("WDS_MAX_MEMBER_SIZE", "1K")
    assert resolve_max_member_size() == 1024
    with pytest.raises(MemberTooLargeError):
        read_all(data)
    assert len(read_all(data, max_member_size=4096)) == 2  # the argument wins
    monkeypatch.setenv("WDS_MAX_MEMBER_SIZE", "lots")
    with pytest.raises(ValueError, match="WDS_MAX_MEMBER_SIZE"):
        read_all(data)
    monkeypatch.delenv("WDS_MAX_MEMBER_SIZE")
    assert resolve_max_member_size() == DEFAULT_MAX_MEMBER_SIZE == 8 << 30
    assert resolve_max_member_size("2G") == 2 << 30
    with pytest.raises(ValueError):
        resolve_max_member_size(0)


def test_members_larger_than_read_ahead_grow_with_the_data(tmp_path):
    big = random.Random(11).randbytes(3 * (16 << 20) + 12345)  # several growth steps
    members = [("a.bin", b"a"), ("big.bin", big), ("z.bin", b"z")]
    data = tar_bytes(members)
    path = tmp_path / "big.tar"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:  # readinto straight into the buffer
        assert list(iter_members(f, "big.tar")) == members
    with open(path, "rb") as f:  # a BufferedReader
        assert list(iter_members(f, "big.tar")) == members
    assert list(iter_members(Trickle(data, 5_000_000), "t")) == members  # read() pieces
    cut = data[: len(data) // 2]
    for stream in (io.BytesIO(cut), Trickle(cut, 3_000_000)):
        with pytest.raises(TruncatedShardError) as info:
            list(iter_members(stream, "cut.tar"))
        assert info.value.member == "big.bin"


def test_large_member_memory_stays_near_its_size(tmp_path):
    size = 48 << 20
    data = tar_bytes([("big.bin", bytes(size))])
    path = tmp_path / "z.tar"
    path.write_bytes(data)
    gz = gzip.compress(data, compresslevel=1)
    for make in (lambda: open(path, "rb", buffering=0), lambda: io.BytesIO(gz)):
        tracemalloc.start()
        try:
            with make() as stream:
                for _, got in iter_members(stream, "z"):
                    assert len(got) == size
                    del got
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < size * 1.4, peak  # gzip.decompress-style reading peaked at 2x


def test_corrupt_gzip_names_url_and_member():
    members = [("a.bin", random.Random(4).randbytes(30_000)), ("b.bin", b"tail")]
    gz = bytearray(gzip.compress(tar_bytes(members)))
    gz[len(gz) // 2] ^= 0xFF
    with pytest.raises(TarFormatError, match="gzip") as info:
        read_all(bytes(gz), url="c.tar.gz", bufsize=4096)
    assert info.value.url == "c.tar.gz"
    assert info.value.member in ("a.bin", "b.bin")
    with pytest.raises(TarFormatError) as info:  # corrupt before any member
        read_all(bytes(gz[:12]) + b"garbage" * 100, url="c.tar.gz")
    assert info.value.member == "<header at offset 0>"


def test_zero_block_in_the_middle_is_reported_not_dropped():
    data = tar_bytes(TWO)
    damaged = data[:1024] + bytes(BLOCK) + data[1024:]
    got = []
    with pytest.raises(TarFormatError, match="end-of-archive") as info:
        for member in iter_members(io.BytesIO(damaged), "z.tar"):
            got.append(member)
    assert got == [("a.txt", b"hello")]  # what came before is still delivered
    assert (info.value.url, info.value.member) == ("z.tar", "a.txt")
    assert "'b.txt'" in str(info.value) and "offset 1536" in str(info.value)
    # two archives glued together with cat: the second one is not silently lost
    with pytest.raises(TarFormatError, match="end-of-archive") as info:
        read_all(data + data, url="cat.tar", bufsize=1000)
    assert info.value.member == "b.txt"
    # non-header junk after the end is reported too
    with pytest.raises(TarFormatError, match="non-zero data"):
        read_all(data + b"junk")


def test_zero_padding_after_the_end_is_fine():
    data = tar_bytes(TWO)
    assert len(data) % 10240 == 0  # tarfile pads to a 10 KiB record
    assert read_all(data, bufsize=512) == TWO
    assert read_all(data[:2048] + bytes(BLOCK)) == TWO  # one zero block, as tarfile accepts
    assert read_all(data + bytes(100_000), bufsize=4096) == TWO
    assert read_all(gzip.compress(data) + bytes(64)) == TWO


def test_gzip_member_inflation_is_bounded():
    blob = gzip.compress(bytes(5_000_000))
    assert gunzip_member(blob) == bytes(5_000_000)
    assert gunzip_member(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    assert gunzip_member(b"") == b""
    with pytest.raises(MemberTooLargeError, match="limit of 1000000"):
        gunzip_member(blob, limit=1_000_000)
    with pytest.raises(EOFError):
        gunzip_member(blob[:-20])


def test_gzip_member_bomb_through_the_decoder_names_url_and_member(monkeypatch):
    from cloudwds.codecs.decoding import Decoder

    bomb = gzip.compress(b"[" + b" " * 3_000_000 + b"]")
    sample = {"__key__": "s1", "__url__": "bomb.tar", "json.gz": bomb}
    assert Decoder()(sample)["json.gz"] == []
    monkeypatch.setenv("WDS_MAX_MEMBER_SIZE", "1M")
    with pytest.raises(MemberTooLargeError, match="inflates") as info:
        Decoder()(sample)
    assert (info.value.url, info.value.member) == ("bomb.tar", "s1.json.gz")


def test_verify_and_index_terminate_with_typed_errors(tmp_path, capsys):
    from cloudwds.cli import main
    from cloudwds.index import scan_shard

    shards = {
        "pax0.tar": pax_header(b"0 path=a.txt\n") + tar_bytes(TWO),
        "negative.tar": with_size_field(tar_bytes(TWO), 0, b"-0001000"),
        "midzero.tar": tar_bytes(TWO)[:1024] + bytes(BLOCK) + tar_bytes(TWO)[1024:],
        "huge.tar": with_size_field(tar_bytes(TWO), 0, b"\x80" + (10**12).to_bytes(11, "big")),
    }
    for name, data in shards.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ShardError) as info:
            scan_shard(str(tmp_path / name))
        assert info.value.url == str(tmp_path / name) and info.value.member
    paths = [str(tmp_path / n) for n in shards]
    assert main(["verify", *paths]) == 1
    out = capsys.readouterr().out
    for path in paths:
        line = next(line for line in out.splitlines() if line.startswith(f"FAIL {path}:"))
        assert "member=" in line
    assert main(["index", "-o", str(tmp_path / "idx.json"), paths[2]]) == 1
    assert "end-of-archive" in capsys.readouterr().err


def test_max_member_size_reaches_webdataset_and_tarfile_to_samples(tmp_path, monkeypatch):
    import cloudwds

    path = write_tar(tmp_path / "s.tar", [("a.txt", b"x" * 5000), ("b.txt", b"y")])
    assert len(list(cloudwds.WebDataset(path, shardshuffle=False))) == 2
    with pytest.raises(MemberTooLargeError) as info:
        list(cloudwds.WebDataset(path, shardshuffle=False, max_member_size="4K"))
    assert (info.value.url, info.value.member) == (path, "a.txt")
    monkeypatch.setenv("WDS_MAX_MEMBER_SIZE", "1000")
    stage = cloudwds.tarfile_to_samples()  # the environment is read when the stage is built
    monkeypatch.delenv("WDS_MAX_MEMBER_SIZE")
    assert stage.max_member_size == 1000
    with pytest.raises(MemberTooLargeError):
        list(stage(iter([path])))
