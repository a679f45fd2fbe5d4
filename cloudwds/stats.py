"""Loader counters: is the accelerator waiting for data, and where do the bytes come from?

Every pipeline object keeps its own counters (a training and a validation dataset in one
process never mix), and each iteration of it (a ``PipelineRun``) counts into them while it
produces an item: the sources and the storage layer add to :data:`COUNTERS`, which forwards
each addition to the counters :func:`counting` made current in this thread (and keeps the
process totals, which are also what work done in background threads — prefetch downloads —
adds to). Workers send a snapshot of their pipeline's counters along with each item they hand
out, and ``WebLoader.stats()`` adds the latest snapshot of every worker and its measured wait
times. ``dataset.stats()`` reports the calling process only. Counting costs an integer
addition or two per sample and per storage block.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_FIELDS = (
    "samples",  # samples produced by shard readers
    "shards_opened",
    "bytes_remote",  # bytes read from object stores / HTTP (network)
    "bytes_local",  # bytes of local shard files opened
    "bytes_cache",  # bytes served from the shard cache
    "cache_hits",
    "cache_misses",
    "retries",  # storage requests retried after an error
    "errors",  # errors passed to a handler that skipped or stopped
)


class Counters:
    """Monotonic per-process counters (thread-safe: storage threads add to them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(_FIELDS, 0)
        self.started = time.monotonic()

    def add(self, field: str, n: int = 1) -> None:
        with self._lock:
            if field == "shards_opened" and not self.values["shards_opened"]:
                self.started = time.monotonic()  # rates count from the first shard, not import
            self.values[field] += n

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out: dict[str, float] = dict(self.values)
        out["elapsed"] = time.monotonic() - self.started
        return out

    def reset(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork time stays held
        with self._lock:
            self.values = dict.fromkeys(_FIELDS, 0)
            self.started = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        # travels to spawned DataLoader workers as a fresh set: a worker counts its own work
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


_SCOPE: ContextVar[Counters | None] = ContextVar("cloudwds_counters", default=None)


class _ProcessCounters(Counters):
    """The process totals; each addition also goes to the current :func:`counting` scope."""

    def add(self, field: str, n: int = 1) -> None:
        super().add(field, n)
        scope = _SCOPE.get()
        if scope is not None:
            scope.add(field, n)


COUNTERS: Counters = _ProcessCounters()
# A forked DataLoader worker starts with its own zeroed counters, not a copy of its parent's.
os.register_at_fork(after_in_child=COUNTERS.reset)


def enter_scope(counters: Counters) -> Any:
    """Hot-path form of :func:`counting`: returns the token for :func:`exit_scope`."""
    return _SCOPE.set(counters)


def exit_scope(token: Any) -> None:
    _SCOPE.reset(token)


@contextmanager
def counting(counters: Counters) -> Iterator[Counters]:
    """Make ``counters`` receive this thread's (this context's) additions to :data:`COUNTERS`."""
    token = _SCOPE.set(counters)
    try:
        yield counters
    finally:
        _SCOPE.reset(token)


def count_samples(n: int = 1) -> None:
    """Hot path: no lock (the GIL keeps a single-threaded ``+=`` of the reader consistent)."""
    COUNTERS.values["samples"] += n
    scope = _SCOPE.get()
    if scope is not None:
        scope.values["samples"] += n


def merge(snapshots: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum counters over processes; ``elapsed`` is the longest one."""
    total: dict[str, float] = dict.fromkeys(_FIELDS, 0)
    total["elapsed"] = 0.0
    for snap in snapshots:
        for key in _FIELDS:
            total[key] += snap.get(key, 0)
        total["elapsed"] = max(total["elapsed"], snap.get("elapsed", 0.0))
    return total


def with_rates(
    counters: Mapping[str, float], waits: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Add derived figures: samples/s, bytes/s by origin, cache hit ratio, data-wait times."""
    out: dict[str, Any] = dict(counters)
    elapsed = max(float(counters.get("elapsed", 0.0)), 1e-9)
    out["samples_per_s"] = counters.get("samples", 0) / elapsed
    out["bytes_remote_per_s"] = counters.get("bytes_remote", 0) / elapsed
    out["bytes_cache_per_s"] = counters.get("bytes_cache", 0) / elapsed
    lookups = counters.get("cache_hits", 0) + counters.get("cache_misses", 0)
    out["cache_hit_ratio"] = counters.get("cache_hits", 0) / lookups if lookups else None
    if waits is not None:
        out.update(waits)
    return out


class WaitTimer:
    """How long each step waited for its batch (time spent inside ``next()`` of the loader)."""

    def __init__(self) -> None:
        self.steps = 0
        self.total = 0.0
        self.max = 0.0
        self.last = 0.0

    def record(self, seconds: float) -> None:
        self.steps += 1
        self.total += seconds
        self.last = seconds
        if seconds > self.max:
            self.max = seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "steps": self.steps,
            "wait_total_s": self.total,
            "wait_mean_s": self.total / self.steps if self.steps else 0.0,
            "wait_max_s": self.max,
            "wait_last_s": self.last,
        }


def format_stats(stats: Mapping[str, Any]) -> str:
    """One line for logs and the demo."""
    ratio = stats.get("cache_hit_ratio")
    parts = [
        f"{stats.get('samples', 0):.0f} samples ({stats.get('samples_per_s', 0):.0f}/s)",
        f"{stats.get('shards_opened', 0):.0f} shards",
        f"remote {stats.get('bytes_remote', 0) / 1e6:.1f} MB",
        f"local {stats.get('bytes_local', 0) / 1e6:.1f} MB",
        f"cache {stats.get('bytes_cache', 0) / 1e6:.1f} MB"
        + (f" (hit ratio {ratio:.0%})" if ratio is not None else ""),
        f"retries {stats.get('retries', 0):.0f}",
    ]
    if "steps" in stats:
        parts.append(
            f"waited {stats.get('wait_total_s', 0):.2f}s over {stats['steps']} steps "
            f"(mean {1000 * stats.get('wait_mean_s', 0):.1f} ms, max {1000 * stats.get('wait_max_s', 0):.1f} ms)"
        )
    return ", ".join(parts)
