"""The Dask job runner every per-shard job uses: one task per item, all run, failures summarised.

``map_shards``, ``cloudwds index``, ``verify`` and ``reshard`` fan their per-shard work out
through :func:`run_jobs`. The cluster is the caller's ``client`` (a ``distributed.Client``), a
scheduler address (``"tcp://host:8786"``; a client is opened for the job and closed after), or,
with neither, a ``LocalCluster`` of worker processes on loopback started for the job and
stopped after. Every task runs to its end even when others fail — raising at the first failure
would release the other futures and cancel the shards still queued — so a re-run only has the
failed ones left to do. Tasks are submitted in a bounded window, so 100,000 shards do not sit
in the scheduler at once; results come back to the driver as they finish (``on_result``), which
is where per-shard parts are published.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

R = TypeVar("R")

__all__ = ["JobOutcome", "dask_client", "run_jobs"]

MAX_LISTED = 5  # failing URLs named in the summary


@dataclass
class JobOutcome(Generic[R]):
    """Per-item results in input order (``None`` where the item failed) and the failures."""

    names: list[str]
    results: list[R | None]
    failures: dict[int, BaseException] = field(default_factory=dict)

    def raise_failures(self, what: str) -> None:
        """Raise the first failure (input order) with a note naming how many failed and which."""
        if not self.failures:
            return
        first = min(self.failures)
        error = self.failures[first]
        listed = [self.names[n] for n in sorted(self.failures)[:MAX_LISTED]]
        more = len(self.failures) - len(listed)
        error.add_note(
            f"{what}: {len(self.failures)} of {len(self.names)} shards failed: "
            + ", ".join(listed)
            + (f" and {more} more" if more > 0 else "")
            + "; the others were done, and a re-run only redoes the failed ones"
        )
        raise error


@contextmanager
def dask_client(
    client: Any = None, scheduler: str | None = None, workers: int | None = None
) -> Iterator[Any]:
    """The client to run on: ``client`` as given, one connected to ``scheduler``, or one on a
    ``LocalCluster`` of ``workers`` processes (default: the CPU count, at most 8) on loopback.
    What this opened is closed on exit; a caller's client is left open."""
    if client is not None:
        yield client
        return
    distributed = _distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    if scheduler is not None:
        own = Client(scheduler)
        try:
            yield own
        finally:
            own.close()
        return
    cluster = LocalCluster(
        n_workers=workers or min(8, os.cpu_count() or 1),
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # no dashboard; the scheduler's small HTTP server on a free loopback port (else it
        # takes 8787, or warns when another cluster holds that)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    try:
        local = Client(cluster)
        try:
            yield local
        finally:
            local.close()
    finally:
        cluster.close()


def run_jobs(
    fn: Callable[..., R],
    calls: Sequence[tuple[Any, ...]],
    names: Sequence[str],
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | None = True,
    desc: str = "shards",
    on_result: Callable[[int, R], None] | None = None,
    **kwargs: Any,
) -> JobOutcome[R]:
    """Run ``fn(*calls[n], **kwargs)`` for every ``n`` on Dask and return the outcome.

    ``names[n]`` (the shard URL) names item ``n`` in the progress bar's failures and in the
    summary. ``fn`` and its arguments must pickle (a module-level function). ``on_result(n,
    result)`` runs in this process as each task succeeds, in completion order. ``progress``
    shows a tqdm bar (``None``: only on a terminal).
    """
    from tqdm import tqdm

    as_completed = _distributed().as_completed

    if len(names) != len(calls):
        raise ValueError(f"{len(calls)} calls but {len(names)} names")
    outcome: JobOutcome[R] = JobOutcome(list(names), [None] * len(calls))
    if not calls:
        return outcome
    job = uuid.uuid4().hex[:8]
    disable = None if progress is None else not progress
    with (
        dask_client(client, scheduler, workers) as dask,
        tqdm(total=len(calls), unit="shard", desc=desc, disable=disable) as bar,
    ):
        window = max(64, 4 * sum(dask.nthreads().values()))
        todo = iter(enumerate(calls))
        index: dict[str, int] = {}

        def submit() -> Any:
            step = next(todo, None)
            if step is None:
                return None
            n, args = step
            key = f"cloudwds-{desc}-{job}-{n}"
            index[key] = n
            return dask.submit(fn, *args, pure=False, key=key, **kwargs)

        pending = as_completed(
            [f for f in (submit() for _ in range(window)) if f is not None],
            with_results=True,
            raise_errors=False,
        )
        # Batches: one wake-up per burst of finished tasks, results fetched concurrently by
        # the client's event loop (a blocking result() per future costs ~10 ms each).
        for batch in pending.batches():
            refill = []
            for future, value in batch:
                n = index.pop(future.key)
                if future.status == "error":
                    _, exn, tb = value
                    outcome.failures[n] = exn.with_traceback(tb)
                elif future.status != "finished":  # cancelled (its worker or client went away)
                    outcome.failures[n] = value
                else:
                    outcome.results[n] = value
                    if on_result is not None:
                        on_result(n, value)
                refill.append(submit())
            bar.update(len(batch))
            if outcome.failures:
                bar.set_postfix(failed=len(outcome.failures), refresh=False)
            pending.update([f for f in refill if f is not None])
    return outcome


def _distributed() -> Any:
    """``distributed``, imported on first use (it is an optional extra) and untyped for mypy."""
    import importlib

    return importlib.import_module("distributed")
