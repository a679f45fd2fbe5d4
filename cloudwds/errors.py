"""Typed errors that carry the shard URL and tar member they concern.

webdataset appends context to ``exn.args``; here the context is part of the type, so a handler
(or a user reading a log line) always sees *which* shard and *which* member went wrong.

Each error also subclasses the built-in exception webdataset (or the standard library under it)
raises in the same situation, so code written for webdataset catches ours unchanged:

=========================  =====================================================
cloudwds error             also an instance of
=========================  =====================================================
``TarFormatError``         ``tarfile.ReadError`` (bad header, not a tar)
``TruncatedShardError``    ``tarfile.ReadError`` ("unexpected end of data")
``DuplicateMemberError``   ``ValueError`` (webdataset: "duplicate file name")
``MissingKeyError``        ``ValueError`` and ``KeyError``
``StorageError``           ``OSError``
``ShardNotFoundError``     ``FileNotFoundError`` (missing file, 404, no bucket)
``StorageAccessError``     ``PermissionError`` (403, missing credentials)
``UnsafeInputError``       ``ValueError`` (webdataset's security refusals)
=========================  =====================================================
"""

from __future__ import annotations

import tarfile


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


class TarFormatError(ShardError, tarfile.ReadError):
    """The bytes are not a (valid) tar archive: bad header checksum, garbage, not a tar at all."""


class TruncatedShardError(ShardError, tarfile.ReadError):
    """The stream ended before the archive did (a member's data or the header block was cut)."""


class MemberTooLargeError(ShardError):
    """A member (or a gzip member once inflated) is larger than the per-member size limit.

    The limit (``max_member_size=``, ``WDS_MAX_MEMBER_SIZE``) bounds what one member may make
    the reader hold in memory; a shard that claims more is refused instead of exhausting memory.
    """


class DuplicateMemberError(ShardError, ValueError):
    """Two members of one sample map to the same suffix (``a.jpg`` twice in a row)."""


class DecodingError(ShardError):
    """A decoder failed on a member's bytes (corrupt image, bad JSON, ...)."""


class MissingKeyError(ShardError, KeyError, ValueError):
    """``to_tuple``/``rename`` asked for a field the sample does not have.

    A ``ValueError`` as in webdataset, and a ``KeyError`` for code that treats samples as dicts.
    """

    def __str__(self) -> str:  # KeyError's __str__ would repr() the whole args tuple
        return ShardError.__str__(self)


class UnsafeInputError(ShardError, ValueError):
    """Content read from a shard, spec or manifest asked for something that could run code.

    Raised for pickles outside the allow-list, ``pipe:`` URLs found in data, and everything
    ``WDS_SECURE=1`` refuses; the message says how to opt in when the data is trusted.
    """


class UrlError(CloudWdsError):
    """An error about one URL as a whole (a manifest, a shard that cannot be read at an offset)."""

    def __init__(self, message: str, url: str | None = None):
        self.message = message
        self.url = url
        super().__init__(message, url)

    def __str__(self) -> str:
        return f"{self.message} (url={self.url!r})" if self.url is not None else self.message


class StorageError(CloudWdsError, OSError):
    """Opening or reading a URL failed (after retries): names the URL and the cause.

    An ``OSError``, as the files and sockets under webdataset's ``gopen`` raise.
    """

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.url = url
        self.args = (message, url)

    def __str__(self) -> str:
        return f"{self.message} (url={self.url!r})" if self.url is not None else self.message

    def __reduce__(self) -> tuple[type[StorageError], tuple[str, str | None]]:
        # OSError's own reduce would rebuild from (errno, strerror)
        return (type(self), (self.message, self.url))


class ShardNotFoundError(StorageError, FileNotFoundError):
    """The shard does not exist: a missing file, HTTP 404, a missing object or bucket."""


class StorageAccessError(StorageError, PermissionError):
    """The store refused access: HTTP 401/403, or no credentials were found."""


class PipeError(StorageError):
    """A ``pipe:`` command exited with a non-zero status."""
