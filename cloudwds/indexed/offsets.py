"""Where each sample's members lie in an unmodified tar shard: the per-shard offsets table.

Random access needs, for every sample of a shard, the data offset and size of each of its
members. :class:`ShardOffsets` holds them compactly (three flat arrays and the member names,
no object per member) and reads and writes them as DALI's ``wds2idx`` index files, so an index
made by ``cloudwds index`` feeds DALI's ``fn.readers.webdataset`` and one made by DALI's tool
feeds :class:`~cloudwds.indexed.IndexedWebDataset`::

    v1.2 2
    jpg 512 10240 000000.jpg cls 11264 1 000000.cls
    jpg 12288 9728 000001.jpg cls 22528 1 000001.cls

First line: version and sample count; then one line per sample, four fields per member:
extension (as in the archive, not lowercased), offset of the member's *data* in the shard,
data size, member name. The format separates fields by whitespace, so a whitespace or ``%``
in a member name is written percent-encoded (``%20``, ``%25``); DALI only uses the name as a
label, so such a file still works there. The file of ``train-000000.tar`` is
``train-000000.idx`` next to it (:func:`offsets_url`), DALI's default name.

Samples are grouped exactly as the streaming reader groups them
(:func:`cloudwds.samples.group_members`): runs of consecutive members sharing the name up to
the first dot of the file name; members whose file name has no dot, or starts with one, and
webdataset's top-level ``__*__`` members, belong to no sample.

gzip-compressed shards (``.tar.gz``/``.tgz``) have no random access: a gzip stream can only be
read from its start. Their offsets are not recorded and opening them for random access raises
:class:`NoRandomAccessError`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import ShardError, UrlError

__all__ = [
    "IndexMismatchError",
    "NoRandomAccessError",
    "OffsetsFormatError",
    "ShardOffsets",
    "is_compressed_url",
    "offsets_url",
]

IDX_VERSION = "v1.2"
_COMPRESSED_SUFFIXES = (".tgz", ".tar.gz", ".gz")


class IndexMismatchError(ShardError, ValueError):
    """The offsets index does not describe the shard it names (size, header or checksum differ).

    The shard was rewritten after the index was built, or the index belongs to another shard:
    rebuild it with ``cloudwds index``. ``url`` names the shard, ``member`` the member checked.
    """


class NoRandomAccessError(UrlError, ValueError):
    """A shard that cannot be read at an offset (gzip-compressed): stream it, or store it as .tar."""


class OffsetsFormatError(NoRandomAccessError):
    """An offsets (``.idx``) file that cannot be parsed."""


def is_compressed_url(url: str) -> bool:
    """Whether the shard's name says gzip (``.tgz``, ``.tar.gz``, ``.gz``)."""
    return url.lower().endswith(_COMPRESSED_SUFFIXES)


def offsets_url(shard_url: str) -> str:
    """The ``.idx`` file of a shard: ``a/train-000000.tar`` → ``a/train-000000.idx``.

    Only a final ``.tar`` is replaced (DALI's tool cuts at the first dot of the name, which
    would give ``x.idx`` to both ``x.a.tar`` and ``x.b.tar``); other names get ``.idx`` added.
    """
    if shard_url.lower().endswith(".tar"):
        return shard_url[:-4] + ".idx"
    return shard_url + ".idx"


def _encode_name(name: str) -> str:
    if "%" not in name and not any(c.isspace() for c in name):
        return name
    return "".join(f"%{ord(c):02X}" if c == "%" or c.isspace() else c for c in name)


def _decode_name(text: str) -> str:
    if "%" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _is_hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def _field_start(name: str) -> int:
    """Index of the dot that starts the field part of ``name``; -1 when it carries no field."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    return dot if dot > slash + 1 else -1


@dataclass
class ShardOffsets:
    """The samples of one shard and where their members' data lie.

    ``names[m]``, ``offsets[m]``, ``sizes[m]``: member ``m`` (in archive order, members of no
    sample left out); sample ``s`` is members ``starts[s]`` to ``starts[s + 1] - 1``. Arrays
    keep a million-sample shard set small in memory and quick to pickle into DataLoader workers.
    ``shard_size`` is the stored object's size when known (from the manifest), checked before
    the first read; ``sha256`` its checksum (checked on request, see ``verify_checksum``).
    """

    url: str
    names: list[str] = field(default_factory=list)
    offsets: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    starts: array[int] = field(default_factory=lambda: array("q", [0]))
    shard_size: int | None = None
    sha256: str | None = None  # the stored object's checksum, from the manifest

    def __len__(self) -> int:
        return len(self.starts) - 1

    @classmethod
    def from_members(
        cls, url: str, members: Iterable[tuple[str, int, int]], shard_size: int | None = None
    ) -> ShardOffsets:
        """Group ``(name, data offset, size)`` members (archive order) into samples."""
        table = cls(url, shard_size=shard_size)
        last_key: str | None = None
        for name, offset, size in members:
            dot = _field_start(name)
            if dot < 0:
                continue
            key = name[:dot]
            if key != last_key:
                if last_key is not None:
                    table.starts.append(len(table.names))
                last_key = key
            table.names.append(name)
            table.offsets.append(offset)
            table.sizes.append(size)
        if last_key is not None:
            table.starts.append(len(table.names))
        return table

    # -- one sample -----------------------------------------------------------------------
    def members(self, sample: int) -> range:
        """Member numbers of sample ``sample``."""
        return range(self.starts[sample], self.starts[sample + 1])

    def key(self, sample: int) -> str:
        name = self.names[self.starts[sample]]
        return name[: _field_start(name)]

    def span(self, sample: int) -> tuple[int, int]:
        """``(start, end)``: from the first member's data to the last member's data end."""
        first, last = self.starts[sample], self.starts[sample + 1] - 1
        return self.offsets[first], self.offsets[last] + self.sizes[last]

    @property
    def data_end(self) -> int:
        """The end of the last member's data: the shard is at least this long."""
        return max((o + s for o, s in zip(self.offsets, self.sizes)), default=0)

    # -- DALI's wds2idx text format ---------------------------------------------------------
    def to_idx(self) -> bytes:
        """The table as a DALI ``wds2idx`` (v1.2) index file."""
        lines = [f"{IDX_VERSION} {len(self)}"]
        names, offsets, sizes = self.names, self.offsets, self.sizes
        for s in range(len(self)):
            parts = []
            for m in self.members(s):
                name = names[m]
                ext = _encode_name(name[_field_start(name) + 1 :])
                parts.append(f"{ext} {offsets[m]} {sizes[m]} {_encode_name(name)}")
            lines.append(" ".join(parts))
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def from_idx(cls, data: bytes, url: str, *, where: str | None = None) -> ShardOffsets:
        """Parse a ``wds2idx`` file (ours or DALI's); ``where`` names the file in errors.

        DALI's files group members into samples by the same rule; lines are trusted for the
        grouping (one line, one sample), names for the keys.
        """
        where = where or offsets_url(url)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exn:
            raise OffsetsFormatError(f"offsets file is not UTF-8 text: {exn}", where) from None
        lines = text.splitlines()
        head = lines[0].split() if lines else []
        if len(head) != 2 or not head[0].startswith("v1.") or not head[1].isdigit():
            raise OffsetsFormatError(
                f"not a wds2idx offsets file (first line {lines[0][:60] if lines else ''!r})",
                where,
            )
        count = int(head[1])
        body = [line for line in lines[1:] if line.strip()]
        if len(body) != count:
            raise OffsetsFormatError(
                f"offsets file announces {count} samples but has {len(body)} lines", where
            )
        table = cls(url)
        for lineno, line in enumerate(body, start=2):
            fields = line.split()
            if not fields or len(fields) % 4:
                raise OffsetsFormatError(
                    f"line {lineno}: expected groups of 'ext offset size name'", where
                )
            for i in range(0, len(fields), 4):
                try:
                    offset, size = int(fields[i + 1]), int(fields[i + 2])
                except ValueError:
                    raise OffsetsFormatError(
                        f"line {lineno}: bad offset or size {fields[i + 1 : i + 3]!r}", where
                    ) from None
                if offset < 0 or size < 0:
                    raise OffsetsFormatError(f"line {lineno}: negative offset or size", where)
                name = _decode_name(fields[i + 3])
                if _field_start(name) < 0:
                    raise OffsetsFormatError(
                        f"line {lineno}: member {name!r} has no field (no dot)", where
                    )
                table.names.append(name)
                table.offsets.append(offset)
                table.sizes.append(size)
            table.starts.append(len(table.names))
        return table


def sample_counts(tables: Sequence[ShardOffsets]) -> list[int]:
    """Samples per shard, in order (the manifest's ``samples``)."""
    return [len(t) for t in tables]
