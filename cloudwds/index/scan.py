"""Reading shards for the index: one sequential pass per shard counts samples and members,
hashes the stored bytes and, on request, records every member's offset (the ``.idx`` table)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..storage import StorageConfig, open_shard
from ..tario import iter_members
from .manifest import ShardInfo

if TYPE_CHECKING:
    from ..indexed.offsets import ShardOffsets

MemberCallback = Callable[[str, bytes], None]


class _Tally:
    """Count (and hash) the raw bytes of a stream as the tar reader pulls them through."""

    def __init__(self, stream: Any, algorithm: str | None):
        self._stream = stream
        self._hash = hashlib.new(algorithm) if algorithm else None
        self.nbytes = 0
        self.head = b""  # the first bytes: gzip magic

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._stream.read(n)
        if data:
            if self.nbytes < 2:
                self.head = (self.head + data[:2])[:2]
            self.nbytes += len(data)
            if self._hash is not None:
                self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str | None:
        return None if self._hash is None else self._hash.hexdigest()


def scan_shard(
    url: str,
    storage: StorageConfig | None = None,
    *,
    checksum: str | None = "sha256",
    verify_checksums: bool = False,
    on_member: MemberCallback | None = None,
) -> ShardInfo:
    """Read one shard to its end and return its :class:`ShardInfo`.

    Every byte of the stored object is counted and hashed (including what follows the
    end-of-archive marker); samples are counted the way readers group them. ``on_member`` sees
    each regular-file member ``(name, data)`` in order. ``verify_checksums`` checks every tar
    header's checksum, not only those without the ustar magic. Raises the reader's typed
    errors (:class:`~cloudwds.errors.TruncatedShardError`, ``TarFormatError``,
    ``StorageError``), which name the URL and member.
    """
    return _scan(url, storage, checksum, verify_checksums, on_member, None)


def scan_shard_offsets(
    url: str,
    storage: StorageConfig | None = None,
    *,
    checksum: str | None = "sha256",
    verify_checksums: bool = False,
) -> tuple[ShardInfo, ShardOffsets | None]:
    """:func:`scan_shard` that also returns the shard's offsets table, in the same single pass.

    The table is ``None`` for a gzip-compressed shard (``info.compressed`` is then true): its
    offsets would be positions in the decompressed stream, which no ranged read can reach.
    """
    offsets: list[tuple[int, int]] = []
    members: list[tuple[str, int]] = []

    def remember(name: str, data: bytes) -> None:
        members.append((name, len(data)))

    from ..indexed.offsets import ShardOffsets

    info = _scan(url, storage, checksum, verify_checksums, remember, offsets)
    if info.compressed:
        return info, None
    table = ShardOffsets.from_members(
        url,
        ((name, data_at, size) for (name, size), (_, data_at) in zip(members, offsets)),
        shard_size=info.bytes,
    )
    return info, table


def _scan(
    url: str,
    storage: StorageConfig | None,
    checksum: str | None,
    verify_checksums: bool,
    on_member: MemberCallback | None,
    offsets: list[tuple[int, int]] | None,
) -> ShardInfo:
    if checksum not in (None, "sha256"):
        raise ValueError(f"checksum must be 'sha256' or None, got {checksum!r}")
    storage = storage or StorageConfig.resolve()
    with open_shard(url, storage) as opened:
        tally = _Tally(opened.stream, checksum)
        samples = members = 0
        last_key: str | None = None
        members_iter = iter_members(tally, url, verify_checksums=verify_checksums, offsets=offsets)
        for name, data in members_iter:
            members += 1
            if on_member is not None:
                on_member(name, data)
            slash = name.rfind("/")
            dot = name.find(".", slash + 1)
            if dot <= slash + 1:
                continue  # no field: not part of any sample
            key = name[:dot]
            if key != last_key:
                samples += 1
                last_key = key
        tally.drain()
    compressed = tally.head == b"\x1f\x8b"
    return ShardInfo(url, samples, tally.nbytes, tally.hexdigest(), members, compressed=compressed)
