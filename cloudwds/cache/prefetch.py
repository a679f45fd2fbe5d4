"""A small, bounded pool for background downloads (read-ahead of upcoming shards).

Bounded twice: at most ``workers`` jobs run at once, and at most ``max_pending`` are accepted
(queued or running); beyond that :meth:`Prefetcher.submit` declines, because read-ahead that
runs further ahead than the consumer can use only evicts what the consumer is about to read.
Each key runs at most once at a time. Jobs handle their own errors; anything that still escapes
is logged here, never raised into the consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

__all__ = ["Prefetcher"]

log = logging.getLogger("cloudwds.cache")


class Prefetcher:
    """Run ``job()`` for ``key`` in the background unless that key is in flight or the pool is full."""

    def __init__(self, workers: int, max_pending: int | None = None):
        self.workers = workers
        self.max_pending = max_pending if max_pending is not None else 4 * workers
        self._mu = threading.Lock()
        self._pending: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudwds-prefetch")

    def submit(self, key: str, job: Callable[[], None]) -> bool:
        """Queue ``job``; ``False`` if ``key`` is already pending or ``max_pending`` is reached."""
        with self._mu:
            if key in self._pending or len(self._pending) >= self.max_pending:
                return False
            future = self._pool.submit(self._run, key, job)
            self._pending[key] = future
            return True

    def pending(self, key: str) -> bool:
        with self._mu:
            return key in self._pending

    def _run(self, key: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            log.exception("prefetch of %s failed", key)
        finally:
            with self._mu:
                self._pending.pop(key, None)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the jobs accepted so far."""
        with self._mu:
            futures = list(self._pending.values())
        wait(futures, timeout=timeout)

    def shutdown(self) -> None:
        """Drop queued jobs, wait for running ones (they hold shard locks and temp files)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._mu:
            self._pending.clear()
