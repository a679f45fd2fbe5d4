"""fsspec plumbing shared by the remote back ends: options per protocol, calls with a timeout.

Kept apart from the readers so that the registry, the readers, the indexed reader and the
identity listing resolve filesystems and sizes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
import fsspec.asyn
import fsspec.core

from ..errors import StorageError
from .retry import RetryPolicy

__all__ = ["call_fs", "filesystem", "object_size", "options_for", "url_to_fs"]


def filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """Resolve ``url`` to an fsspec filesystem and path, honouring per-protocol options.

    ``storage_options`` is either the options for this URL's filesystem, or a mapping from
    protocol (``"s3"``, ``"gs"``, ``"az"``, ...) to options, so one dataset can span stores.
    """
    return url_to_fs(url, options_for(url, storage_options))


def url_to_fs(url: str, options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """``fsspec.core.url_to_fs`` with options already chosen for this URL's protocol."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(options or {}))
    except ImportError as exn:
        raise StorageError(f"no filesystem for this URL: {exn}", url) from exn
    return fs, str(path)


_PROTOCOL_KEYS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "ais"}
_ALIASES = {"gcs": "gs", "abfs": "az", "abfss": "az", "s3a": "s3", "https": "http"}


def options_for(url: str, storage_options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The options for ``url``'s protocol out of the user's ``storage_options``.

    A mapping whose keys are all protocol names (``{"s3": {...}, "gs": {...}}``) is a table per
    protocol (aliases: ``gcs``→``gs``, ``abfs(s)``→``az``, ``s3a``→``s3``, ``https``→``http``);
    any other mapping is the options of every URL.
    """
    if not storage_options:
        return {}
    if all(k in _PROTOCOL_KEYS and isinstance(v, Mapping) for k, v in storage_options.items()):
        protocol = url.split("://", 1)[0].lower() if "://" in url else ""
        for key in (protocol, _ALIASES.get(protocol, protocol)):
            if key in storage_options:
                options: Mapping[str, Any] = storage_options[key]
                return options
        return {}
    return storage_options


def call_fs(
    fs: Any,
    async_name: str,
    sync_name: str,
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """Call an fsspec method, through its async form with a timeout when the backend has one."""
    if getattr(fs, "async_impl", False) and hasattr(fs, async_name):
        return fsspec.asyn.sync(fs.loop, getattr(fs, async_name), *args, timeout=timeout, **kwargs)
    return getattr(fs, sync_name)(*args, **kwargs)


def object_size(fs: Any, path: str, url: str, policy: RetryPolicy) -> int:
    """The object's size in bytes (one ``info`` request, retried); a short read is then detectable."""
    info = policy.run(
        "stat", url, lambda: call_fs(fs, "_info", "info", path, timeout=policy.timeout)
    )
    size = info.get("size")
    if size is None:
        raise StorageError("object size unknown (server sent no length)", url)
    return int(size)
