"""webdataset's ``tariterators`` module over cloudwds's storage, tar reader and grouping.

Client code (open_clip, timm, diffusers) rebuilds webdataset's tar pipeline from these pieces:
``url_opener`` (``{"url"}`` → ``{"url", "stream"}``), ``tar_file_expander`` (→ one
``{"fname", "data", "__url__"}`` dict per member) and its own copy of ``group_by_keys``.

Two generations of clients: webdataset 1.0's ``tar_file_expander`` yields an empty dict ``{}``
after each shard (an end-of-shard marker) and its ``group_by_keys`` relies on it; the
``group_by_keys_nothrow`` copied into open_clip and diffusers from 0.2.x reads
``filesample["fname"]`` from every item and fails on that marker (``KeyError: 'fname'``). Here
``tar_file_expander`` yields no marker unless asked (``eof_value={}``), and :func:`group_by_keys`
ends a sample when the shard (``__url__``) changes, so it needs none — both kinds of client work.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeGuard

import braceexpand

from .gopen import gopen
from .handlers import Handler, reraise_exception
from .sources import tarfile_to_samples
from .tario import iter_members

__all__ = [
    "base_plus_ext",
    "group_by_keys",
    "meta_prefix",
    "meta_suffix",
    "shardlist",
    "tar_file_expander",
    "tar_file_iterator",
    "tarfile_samples",
    "tarfile_to_samples",
    "url_opener",
    "valid_sample",
]

meta_prefix = "__"
meta_suffix = "__"


def base_plus_ext(path: str) -> tuple[str | None, str | None]:
    """``dir/a.b.jpg`` → ``("dir/a", "b.jpg")``; ``(None, None)`` for names carrying no field.

    The key is everything up to the first dot of the file name, the same split cloudwds's own
    grouping uses (:func:`cloudwds.samples.split_name`).
    """
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", path)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def valid_sample(sample: Any) -> TypeGuard[dict[str, Any]]:
    """A non-empty dict not flagged ``__bad__``."""
    return isinstance(sample, dict) and len(sample) > 0 and not sample.get("__bad__", False)


def shardlist(urls: str | Iterable[str], *, shuffle: bool = False) -> Iterator[dict[str, str]]:
    """``{"url": u}`` for each brace-expanded URL, optionally in random order."""
    items = list(braceexpand.braceexpand(urls)) if isinstance(urls, str) else list(urls)
    if shuffle:
        random.shuffle(items)
    for url in items:
        yield {"url": url}


def url_opener(
    data: Iterable[dict[str, Any]], handler: Handler = reraise_exception, **kw: Any
) -> Iterator[dict[str, Any]]:
    """Add ``stream`` (opened with :func:`cloudwds.gopen.gopen`) to each ``{"url": ...}`` item.

    The item's ``storage`` (set by cloudwds shard lists) is used when present; ``kw`` goes to
    ``gopen``. Errors name the URL and go to ``handler``.
    """
    for sample in data:
        if not isinstance(sample, dict) or "url" not in sample:
            raise TypeError(f"url_opener expects {{'url': ...}} items, got {sample!r}")
        url = sample["url"]
        try:
            options = dict(kw)
            storage = getattr(sample, "storage", None) or sample.get("storage")
            if storage is not None:
                options.setdefault("storage", storage)
            stream = gopen(url, **options)
        except Exception as exn:  # noqa: BLE001 - any error goes to the user's handler
            exn.args = exn.args + (url,)
            if handler(exn):
                continue
            break
        yield {**sample, "stream": stream}


def tar_file_iterator(
    fileobj: Any,
    skip_meta: str | None = r"__[^/]*__($|/)",
    handler: Handler = reraise_exception,
    select_files: Callable[[str], bool] | None = None,
    rename_files: Callable[[str], str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``{"fname", "data"}`` for each regular member of the tar stream ``fileobj``.

    Reads with cloudwds's streaming tar reader; a truncated or corrupt stream raises
    :class:`~cloudwds.errors.TarFormatError` / ``TruncatedShardError`` (both
    ``tarfile.ReadError``), which goes to ``handler``.
    """
    url = getattr(fileobj, "name", None)
    try:
        for fname, data in iter_members(fileobj, url if isinstance(url, str) else None):
            if skip_meta is not None and re.match(skip_meta, fname):
                continue
            if rename_files is not None:
                fname = rename_files(fname)
            if select_files is not None and not select_files(fname):
                continue
            yield {"fname": fname, "data": data}
    except Exception as exn:  # noqa: BLE001 - any error goes to the user's handler
        if exn.args:
            exn.args = (f"{exn.args[0]} @ {fileobj}",) + exn.args[1:]
        if not handler(exn):
            return


def tar_file_expander(
    data: Iterable[dict[str, Any]],
    handler: Handler = reraise_exception,
    select_files: Callable[[str], bool] | None = None,
    rename_files: Callable[[str], str] | None = None,
    eof_value: Any = None,
) -> Iterator[dict[str, Any]]:
    """Expand ``{"url", "stream"}`` items into member dicts with ``__url__`` (and local path).

    ``eof_value`` (default None: nothing) is yielded after each shard when given; webdataset
    1.0 yields ``{}`` there by default, which clients copied from 0.2.x cannot handle. Each
    stream is closed when its shard ends or the consumer stops.
    """
    for source in data:
        url = source.get("url")
        local_path = source.get("local_path")
        stream = source.get("stream")
        try:
            if stream is None:
                raise TypeError(
                    f"tar_file_expander expects {{'url', 'stream'}} items, got {source!r}"
                )
            for sample in tar_file_iterator(
                stream, handler=handler, select_files=select_files, rename_files=rename_files
            ):
                sample["__url__"] = url
                if local_path is not None:
                    sample["__local_path__"] = local_path
                yield sample
            if eof_value is not None:
                yield eof_value
        except Exception as exn:  # noqa: BLE001 - any error goes to the user's handler
            exn.args = exn.args + (stream, url)
            if handler(exn):
                continue
            break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def group_by_keys(
    data: Iterable[dict[str, Any]],
    keys: Callable[[str], tuple[str | None, str | None]] = base_plus_ext,
    lcase: bool = True,
    suffixes: set[str] | None = None,
    handler: Handler = reraise_exception,
) -> Iterator[dict[str, Any]]:
    """Group consecutive member dicts into samples ``{"__key__", "__url__", suffix: data}``.

    A sample ends when the key changes, when the shard (``__url__``) changes, or at an
    end-of-shard marker ``{}`` if the stream has them. A repeated suffix within one sample is a
    :class:`~cloudwds.errors.DuplicateMemberError` (a ``ValueError``).
    """
    from .errors import DuplicateMemberError

    current: dict[str, Any] | None = None
    for filesample in data:
        try:
            if not filesample:
                if valid_sample(current):
                    yield current
                current = None
                continue
            fname, value = filesample["fname"], filesample["data"]
            prefix, suffix = keys(fname)
            if prefix is None or suffix is None:
                continue
            if lcase:
                suffix = suffix.lower()
            url = filesample.get("__url__")
            if current is None or prefix != current["__key__"] or url != current["__url__"]:
                if valid_sample(current):
                    yield current
                current = {"__key__": prefix, "__url__": url}
            if suffix in current:
                raise DuplicateMemberError(
                    f"{fname}: duplicate file name in tar file {suffix} {list(current.keys())}",
                    url,
                    fname,
                )
            if suffixes is None or suffix in suffixes:
                current[suffix] = value
            local_path = filesample.get("__local_path__")
            if local_path is not None:
                current["__local_path__"] = local_path
        except Exception as exn:  # noqa: BLE001 - any error goes to the user's handler
            exn.args = exn.args + (filesample.get("stream"), filesample.get("url"))
            if handler(exn):
                continue
            break
    if valid_sample(current):
        yield current


def tarfile_samples(
    src: Iterable[Any],
    handler: Handler = reraise_exception,
    select_files: Callable[[str], bool] | None = None,
    rename_files: Callable[[str], str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Shard items → samples now: :class:`cloudwds.sources.tarfile_to_samples` applied to ``src``."""
    return tarfile_to_samples(handler, select_files, rename_files)(src)
