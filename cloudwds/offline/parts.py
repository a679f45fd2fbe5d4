"""Per-shard parts of a job: one small JSON file per finished shard, published atomically.

A job over 100,000 shards must survive being stopped: each shard's result is written as a part
as soon as the driver receives it (under a temporary name, then renamed or uploaded whole, so a
part is complete or absent), and a re-run reads the parts back and submits only the shards
without a valid one. Parts live under one *job directory* rather than next to the shards: a
``verify`` of a read-only bucket must not write into it, leftovers sit under one prefix that
one recursive delete removes, and the driver — the only writer — needs no store shared with
the workers. The default job directory is on the driver's disk, under the per-user cache and
named by a digest of the job's inputs, so running the same command again finds it; any URL
(``s3://bucket/jobs/x``) works too, e.g. to resume from another machine.

Each part records the shard's identity (size and ETag/generation/mtime, from one listing per
directory: :func:`cloudwds.storage.object_identities`) when it was read; a part whose shard has
changed since is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from ..storage import StorageConfig, filesystem, open_shard, write_output
from ..storage.local import local_path_of

__all__ = ["PartStore", "default_job_dir", "identity_matches", "part_key"]

SUFFIX = ".json"


def part_key(url: str) -> str:
    """The part's file name stem for a shard URL (a digest: URLs hold slashes and colons)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def default_job_dir(kind: str, *inputs: Any) -> str:
    """``$XDG_CACHE_HOME/cloudwds/jobs/KIND-DIGEST``: the same inputs give the same directory."""
    from ..cache.defaults import default_cache_dir

    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    return os.path.join(os.path.dirname(default_cache_dir()), "jobs", f"{kind}-{digest[:16]}")


def identity_matches(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether a shard still is what a part recorded: equal identities, or — when the store
    could not be listed and only the URL is known — the same URL (then the part is trusted)."""
    if recorded is None:
        return False
    if set(current) == {"url"}:
        return bool(recorded.get("url") == current["url"])
    return dict(recorded) == dict(current)


class PartStore:
    """The parts of one job under ``job_dir`` (a local path or any URL the storage layer writes)."""

    def __init__(self, job_dir: str, storage: StorageConfig | None = None):
        self.job_dir = job_dir.rstrip("/")
        self.storage = storage or StorageConfig.resolve()
        self._local = local_path_of(self.job_dir)

    def url_of(self, key: str) -> str:
        if self._local is not None:
            return os.path.join(self._local, key + SUFFIX)
        return f"{self.job_dir}/{key}{SUFFIX}"

    def _names(self) -> list[str]:
        if self._local is not None:
            try:
                return [n for n in os.listdir(self._local) if n.endswith(SUFFIX)]
            except FileNotFoundError:
                return []
        fs, path = filesystem(self.job_dir, self.storage.storage_options)
        fs.invalidate_cache(path)
        try:
            found = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in found]
        return [n for n in names if n.endswith(SUFFIX)]

    def load(self, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{key: part}`` for the parts present (one listing, then reads on 16 threads);
        ``keys`` limits the reads to those. A part that does not parse is ignored (redone)."""
        names = self._names()
        if keys is not None:
            wanted = set(keys)
            names = [n for n in names if n[: -len(SUFFIX)] in wanted]

        def read(name: str) -> tuple[str, dict[str, Any] | None]:
            key = name[: -len(SUFFIX)]
            try:
                with open_shard(self.url_of(key), self.storage) as opened:
                    doc = json.loads(opened.stream.read())
            except (OSError, ValueError):
                return key, None  # vanished or torn by hand: the shard is simply redone
            return key, doc if isinstance(doc, dict) else None

        with ThreadPoolExecutor(16, thread_name_prefix="cloudwds-parts") as pool:
            return {k: d for k, d in pool.map(read, names) if d is not None}

    def write(self, key: str, doc: Mapping[str, Any]) -> None:
        """Publish one part atomically (temporary name, then the final one).

        A local part is not fsynced: after a power cut it may be torn or empty, which
        :meth:`load` treats as absent (the shard is redone); syncing 100,000 parts would cost
        the driver minutes."""
        data = json.dumps(doc, sort_keys=True).encode("utf-8")
        if self._local is not None:
            os.makedirs(self._local, exist_ok=True)
            final = os.path.join(self._local, key + SUFFIX)
            temp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, final)
            return
        write_output(self.url_of(key), data, self.storage)

    @contextmanager
    def publisher(self, threads: int = 8) -> Iterator[Callable[[str, Mapping[str, Any]], None]]:
        """``put(key, doc)``: :meth:`write` on background threads, so a driver receiving
        thousands of results a minute is not held up by the store; all writes are done (the
        first error raised) when the block exits."""
        with ThreadPoolExecutor(threads, thread_name_prefix="cloudwds-parts") as pool:
            futures: list[Future[None]] = []

            def put(key: str, doc: Mapping[str, Any]) -> None:
                futures.append(pool.submit(self.write, key, doc))
                if len(futures) >= 4 * threads:  # bound the backlog; surface errors early
                    for done in [f for f in futures if f.done()]:
                        futures.remove(done)
                        done.result()

            try:
                yield put
            finally:
                for f in futures:
                    f.result()

    def remove(self) -> None:
        """Delete the job directory and every part in it (the job's result is saved)."""
        if self._local is not None:
            import shutil

            shutil.rmtree(self._local, ignore_errors=True)
            return
        fs, path = filesystem(self.job_dir, self.storage.storage_options)
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
