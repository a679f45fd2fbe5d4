"""Typed errors that carry the shard URL and tar member they concern.

webdataset appends context to ``exn.args``; here the context is part of the type, so a handler
(or a user reading a log line) always sees *which* shard and *which* member went wrong.
"""

from __future__ import annotations


class CloudWdsError(Exception):
    """Base class of every error raised by cloudwds itself."""


class ShardError(CloudWdsError):
    """A problem inside one shard: ``url`` names the shard, ``member`` the tar member (if known)."""

    def __init__(self, message: str, url: str | None = None, member: str | None = None):
        self.message = message
        self.url = url
        self.member = member
        super().__init__(message, url, member)

    def __str__(self) -> str:
        where = []
        if self.url is not None:
            where.append(f"url={self.url!r}")
        if self.member is not None:
            where.append(f"member={self.member!r}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class TarFormatError(ShardError):
    """The bytes are not a (valid) tar archive: bad header checksum, garbage, not a tar at all."""


class TruncatedShardError(ShardError):
    """The stream ended before the archive did (a member's data or the header block was cut)."""


class DuplicateMemberError(ShardError):
    """Two members of one sample map to the same suffix (``a.jpg`` twice in a row)."""


class DecodingError(ShardError):
    """A decoder failed on a member's bytes (corrupt image, bad JSON, ...)."""


class MissingKeyError(ShardError, KeyError):
    """``to_tuple``/``rename`` asked for a field the sample does not have."""

    def __str__(self) -> str:  # KeyError's __str__ would repr() the whole args tuple
        return ShardError.__str__(self)


class StorageError(CloudWdsError):
    """Opening or reading a URL failed (after retries): names the URL and the cause."""

    def __init__(self, message: str, url: str | None = None):
        self.message = message
        self.url = url
        super().__init__(message, url)

    def __str__(self) -> str:
        return f"{self.message} (url={self.url!r})" if self.url is not None else self.message


class PipeError(StorageError):
    """A ``pipe:`` command exited with a non-zero status."""
