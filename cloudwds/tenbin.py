"""The ``.ten`` tensor format (webdataset's "tenbin"): lists of arrays, 64-byte aligned.

Format (little-endian int64 throughout):

- the file is a series of *chunks*: the 8 ASCII bytes ``~TenBin~``, the payload length in bytes,
  then the payload padded with zeros to a multiple of 64 bytes;
- each array is two chunks: a header, then the raw array bytes (C order);
- a header is int64 values: the dtype code (``f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8`` as 8 ASCII
  bytes, zero-padded), an 8-byte ASCII info string, the number of dimensions (< 10), then each
  dimension.

Decoded arrays are read-only views of the buffer (no copy). Written from the format description;
the byte layout matches webdataset's ``.ten`` files on little-endian machines.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "decode_buffer",
    "decode_chunks",
    "decode_header",
    "decode_list",
    "encode_buffer",
    "encode_chunks",
    "encode_header",
    "encode_list",
    "load",
    "read",
    "read_chunk",
    "roundup",
    "save",
    "tenbin_dumps",
    "tenbin_loads",
    "write",
    "write_chunk",
]

MAGIC = b"~TenBin~"
_ALIGN = 64
_CODES = {
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "int8": "i1",
    "int16": "i2",
    "int32": "i4",
    "int64": "i8",
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
    "uint64": "u8",
}
_DTYPES = {code: np.dtype(name) for name, code in _CODES.items()}


def roundup(n: int, k: int = _ALIGN) -> int:
    """``n`` rounded up to a multiple of ``k``."""
    return k * ((n + k - 1) // k)


def _word(s: str) -> int:
    raw = s.encode("ascii")
    if len(raw) > 8:
        raise ValueError(f"tenbin: {s!r} is longer than 8 bytes")
    return int(struct.unpack("<q", raw.ljust(8, b"\0"))[0])


def _unword(i: int) -> str:
    return struct.pack("<q", int(i)).rstrip(b"\0").decode("ascii")


def encode_header(a: np.ndarray, info: str = "") -> bytes:
    """The header chunk payload of array ``a``."""
    if a.ndim >= 10:
        raise ValueError("tenbin: too many dimensions (at most 9)")
    code = _CODES.get(a.dtype.name)
    if code is None:
        raise ValueError(f"tenbin: unsupported dtype {a.dtype.name}")
    values = [_word(code), _word(info), a.ndim, *a.shape]
    return np.array(values, dtype="<i8").tobytes()


def decode_header(h: bytes | memoryview) -> tuple[tuple[int, ...], np.dtype, str]:
    """``(shape, dtype, info)`` of a header chunk payload."""
    values = np.frombuffer(h, dtype="<i8")
    code = _unword(values[0])
    if code not in _DTYPES:
        raise ValueError(f"tenbin: unsupported dtype code {code!r}")
    ndim = int(values[2])
    shape = tuple(int(d) for d in values[3 : 3 + ndim])
    return shape, _DTYPES[code].newbyteorder("<"), _unword(values[1])


def _payload(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def encode_list(arrays: Sequence[np.ndarray], infos: Sequence[str] | None = None) -> list[bytes]:
    """Header and data payloads, alternating, for each array."""
    if infos is None:
        infos = [""]
    elif len(infos) != len(arrays):
        raise ValueError(f"tenbin: {len(arrays)} arrays but {len(infos)} infos")
    result: list[bytes] = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        result += [encode_header(a, infos[i % len(infos)]), _payload(a)]
    return result


def decode_list(chunks: Sequence[bytes | memoryview], infos: bool = False) -> Any:
    """Arrays from alternating header/data payloads; ``infos=True`` returns ``(arrays, infos)``."""
    if len(chunks) % 2:
        raise ValueError("tenbin: a header without its data chunk")
    arrays, names = [], []
    for header, data in zip(chunks[::2], chunks[1::2], strict=True):
        shape, dtype, info = decode_header(header)
        count = int(np.prod(shape, dtype=np.int64))
        arrays.append(np.frombuffer(data, dtype=dtype, count=count).reshape(shape))
        names.append(info)
    return (arrays, names) if infos else arrays


def encode_chunks(chunks: Sequence[bytes]) -> bytes:
    """Frame payloads as chunks: magic, length, padded payload."""
    out = bytearray()
    for payload in chunks:
        out += MAGIC + struct.pack("<q", len(payload)) + payload
        out += b"\0" * (roundup(len(payload)) - len(payload))
    return bytes(out)


def decode_chunks(buf: bytes | bytearray | memoryview) -> list[memoryview]:
    """The payloads of the chunks in ``buf`` (views, no copies)."""
    view = memoryview(buf).cast("B")
    result, offset, total = [], 0, len(view)
    while offset < total:
        if bytes(view[offset : offset + 8]) != MAGIC:
            raise ValueError(f"tenbin: bad magic at offset {offset}")
        (nbytes,) = struct.unpack("<q", view[offset + 8 : offset + 16])
        if nbytes < 0 or offset + 16 + nbytes > total:
            raise ValueError(f"tenbin: chunk at offset {offset} has a bad length {nbytes}")
        result.append(view[offset + 16 : offset + 16 + nbytes])
        offset += 16 + roundup(nbytes)
    return result


def encode_buffer(arrays: list[np.ndarray], infos: Sequence[str] | None = None) -> bytes:
    """A list of arrays → ``.ten`` bytes."""
    if not isinstance(arrays, list):
        raise ValueError("tenbin: encode_buffer requires a list of arrays")
    return encode_chunks(encode_list(arrays, infos=infos))


def decode_buffer(buf: bytes | bytearray | memoryview, infos: bool = False) -> Any:
    """``.ten`` bytes → a list of arrays (``infos=True``: ``(arrays, infos)``)."""
    return decode_list(decode_chunks(buf), infos=infos)


def write_chunk(stream: BinaryIO, payload: bytes) -> None:
    """Write one chunk to a stream."""
    stream.write(encode_chunks([payload]))


def read_chunk(stream: BinaryIO) -> bytes | None:
    """Read one chunk's payload from a stream; None at a clean end of stream."""
    head = stream.read(8)
    if not head:
        return None
    if head != MAGIC:
        raise ValueError("tenbin: magic number does not match")
    (nbytes,) = struct.unpack("<q", stream.read(8))
    if nbytes < 0:
        raise ValueError("tenbin: negative chunk length")
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise ValueError("tenbin: premature end of stream")
    stream.read(roundup(nbytes) - nbytes)
    return data


def write(
    stream: BinaryIO, arrays: Sequence[np.ndarray], infos: Sequence[str] | None = None
) -> None:
    """Write arrays to a stream."""
    for payload in encode_list(arrays, infos=infos):
        write_chunk(stream, payload)


def read(stream: BinaryIO, n: int = sys.maxsize, infos: bool = False) -> Any:
    """Read up to ``n`` arrays from a stream."""
    chunks: list[bytes] = []
    for _ in range(n):
        header = read_chunk(stream)
        if header is None:
            break
        data = read_chunk(stream)
        if data is None:
            raise ValueError("tenbin: premature end of stream")
        chunks += [header, data]
    return decode_list(chunks, infos=infos)


def save(
    fname: str, *args: np.ndarray, infos: Sequence[str] | None = None, nocheck: bool = False
) -> None:
    """Save arrays to a ``.ten`` file."""
    if not nocheck and not fname.endswith(".ten"):
        raise ValueError("file name should end in .ten")
    with open(fname, "wb") as stream:
        write(stream, args, infos=infos)


def load(fname: str, infos: bool = False, nocheck: bool = False) -> Any:
    """Load the arrays of a ``.ten`` file."""
    if not nocheck and not fname.endswith(".ten"):
        raise ValueError("file name should end in .ten")
    with open(fname, "rb") as stream:
        return read(stream, infos=infos)


def tenbin_loads(data: bytes) -> list[np.ndarray]:
    """Decoder of ``.ten`` members: the list of arrays (webdataset's ``tenbin_loads``)."""
    arrays: list[np.ndarray] = decode_buffer(data)
    return arrays


def tenbin_dumps(x: Any) -> bytes:
    """Encoder of ``.ten`` members: a list of arrays, or one array (stored as a list of one)."""
    return encode_buffer(x if isinstance(x, list) else [x])
