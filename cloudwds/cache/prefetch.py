"""A small, bounded pool for background downloads (read-ahead of upcoming shards).

Bounded twice: at most ``workers`` jobs run at once, and at most ``max_pending`` are accepted
(queued or running); beyond that :meth:`Prefetcher.submit` declines, because read-ahead that
runs further ahead than the consumer can use only evicts what the consumer is about to read.
Each key runs at most once at a time. Jobs handle their own errors; anything that still escapes
is logged here, never raised into the consumer.

A :class:`PrefetchGroup` ties prefetches to the iteration that asked for them: when the
iteration ends or is closed, :meth:`PrefetchGroup.close` drops the queued ones and cancels the
running ones that no reader uses (see :class:`~.download.Download`), and returns only once none
of them can create, write, publish or evict anything in the cache any more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .download import Download

__all__ = ["PrefetchGroup", "PrefetchTicket", "Prefetcher"]

log = logging.getLogger("cloudwds.cache")


class Prefetcher:
    """Run ``job()`` for ``key`` in the background unless that key is in flight or the pool is full."""

    def __init__(self, workers: int, max_pending: int | None = None):
        self.workers = workers
        self.max_pending = max_pending if max_pending is not None else 4 * workers
        self._mu = threading.Lock()
        self._pending: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudwds-prefetch")

    def submit(self, key: str, job: Callable[[], None]) -> Future[None] | None:
        """Queue ``job``; ``None`` if ``key`` is already pending or ``max_pending`` is reached."""
        with self._mu:
            if key in self._pending or len(self._pending) >= self.max_pending:
                return None
            future = self._pool.submit(self._run, key, job)
            self._pending[key] = future
            return future

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


class PrefetchTicket:
    """One prefetch job's link to its group: the job checks ``cancelled`` under ``mu`` before
    each step that changes the cache, and records its download there once it has one."""

    def __init__(self) -> None:
        self.mu = threading.Lock()
        self.cancelled = False
        self.download: Download | None = None
        self.future: Future[None] | None = None

    def cancel(self) -> None:
        """Stop the job (queued: never runs; running: stops before its next change to the cache);
        returns once nothing of it can touch the cache."""
        with self.mu:
            self.cancelled = True
            download, future = self.download, self.future
        if future is not None:
            future.cancel()
        if download is not None and not download.let_go():
            download.wait()  # it was renaming its file into place: a moment, never the network


class PrefetchGroup:
    """The prefetches of one iteration; :meth:`close` (or leaving ``with``) ends them all.

    A prefetch whose shard a reader is still reading is not cancelled: its download goes on for
    that reader and ends with it.
    """

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._tickets: list[PrefetchTicket] = []
        self._closed = False

    def ticket(self) -> PrefetchTicket | None:
        """A new ticket in this group, or ``None`` once the group is closed."""
        with self._mu:
            if self._closed:
                return None
            ticket = PrefetchTicket()
            self._tickets.append(ticket)
            return ticket

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._mu:
            self._closed = True
            tickets, self._tickets = self._tickets, []
        for ticket in tickets:
            ticket.cancel()

    def __enter__(self) -> PrefetchGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
