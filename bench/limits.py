"""Raw limits on the same data: what any reader of these files must at least spend.

- :func:`cat_files`: read every byte of the shards in 1 MiB ``readinto`` calls into one reused
  buffer (``cat > /dev/null``; page-cached after the first pass). No parsing, no copies.
- :func:`tar_headers`: walk the tar headers of the shards in a tight Python loop over an
  ``mmap`` (name and size of every member; data pages are never touched or copied). This is the
  per-member floor of a tar parser written in Python, not a full reader.
- :func:`read_members`: every member read into a fresh ``bytes`` with one ``read(size)``: the
  floor for handing out large members (used for the 4 MB ``.npy`` case).
- :func:`pil_decode`: bare Pillow decode of the same JPEG bytes (preloaded in memory) plus the
  float conversion ``decode("rgb")`` performs (uint8 HWC -> float32 / 255), nothing else.
- :func:`fsspec_cat` / :func:`fsspec_stream`: the raw fsspec read speed of the same objects
  from the S3 endpoint: one ``cat_file`` (one GET) per object, or ``fs.open`` + 1 MiB reads;
  :func:`fsspec_ranges`: ``info`` + sequential 8 MiB ``cat_file`` ranges per object.
"""

from __future__ import annotations

import io
import mmap
import os
import tarfile
from collections.abc import Sequence
from typing import Any

import numpy as np

_F255 = np.float32(255.0)


def cat_files(paths: Sequence[str], chunk: int = 1 << 20) -> int:
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            readinto = f.readinto
            while True:
                n = readinto(view)
                if not n:
                    break
                total += n
    return total


def tar_headers(paths: Sequence[str]) -> int:
    """Number of regular-file members, parsing only ustar headers."""
    members = 0
    for path in paths:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            end = len(mm)
            pos = 0
            while pos + 512 <= end:
                header = mm[pos : pos + 512]
                if header[0] == 0 and not any(header):
                    break
                name = header[:100].split(b"\0", 1)[0]
                size_field = header[124:136].split(b"\0", 1)[0].strip()
                size = int(size_field, 8) if size_field else 0
                if header[156:157] in (b"0", b"\0") and name:
                    members += 1
                pos += 512 + ((size + 511) & ~511)
    return members


def read_members(paths: Sequence[str]) -> int:
    """Every member's data as a new ``bytes`` (one ``read(size)`` each), headers parsed minimally.

    The floor for *handing out* large members: one kernel-to-user copy per member and nothing
    else. (Two system calls per member make it a poor reader of small records.)
    """
    members = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            read, seek = f.read, f.seek
            while True:
                header = read(512)
                if len(header) < 512 or header[0] == 0:
                    break
                size_field = header[124:136].split(b"\0", 1)[0].strip()
                size = int(size_field, 8) if size_field else 0
                read(size)
                if size % 512:
                    seek(512 - size % 512, 1)
                members += 1
    return members


def load_members(paths: Sequence[str], ext: str) -> list[bytes]:
    """All members ending in ``.ext`` (setup for :func:`pil_decode`, not timed)."""
    out: list[bytes] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith("." + ext):
                    f = tar.extractfile(m)
                    assert f is not None
                    out.append(f.read())
    return out


def pil_decode(blobs: Sequence[bytes]) -> int:
    from PIL import Image

    n = 0
    for data in blobs:
        img = Image.open(io.BytesIO(data))
        arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
        np.divide(arr, _F255, dtype=np.float32)
        n += 1
    return n


def fsspec_cat(fs: Any, urls: Sequence[str]) -> int:
    return sum(len(fs.cat_file(u)) for u in urls)


def fsspec_stream(fs: Any, urls: Sequence[str], block_size: int = 8 << 20) -> int:
    total = 0
    for u in urls:
        with fs.open(u, "rb", block_size=block_size) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
    return total


def fsspec_ranges(fs: Any, urls: Sequence[str], block_size: int = 8 << 20) -> int:
    """``cat_file`` in consecutive ``block_size`` ranges, one after the other (the request
    pattern of a ranged reader, without its read-ahead)."""
    total = 0
    for u in urls:
        size = fs.info(u)["size"]
        for start in range(0, size, block_size):
            total += len(fs.cat_file(u, start=start, end=min(size, start + block_size)))
    return total


def file_size(paths: Sequence[str]) -> int:
    return sum(os.path.getsize(p) for p in paths)
