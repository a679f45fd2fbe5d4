"""``check_resume``: stop a pipeline at every given point, resume it, compare with one epoch.

Used by tests/test_resume.py over every stateful stage and source. The state goes through JSON
(what a checkpoint file does) and the resumed pipeline is built afresh by the factory, as in a
restarted training job.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import cloudwds as wds


def _key(item: Any) -> str:
    return str(item["__key__"])


def tag_worker(sample: dict[str, Any]) -> dict[str, Any]:
    """Record the DataLoader worker that produced the sample (module level: picklable)."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return {**sample, "__check_worker__": -1 if info is None else info.id}


def _by_worker(items: list[dict[str, Any]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for item in items:
        out.setdefault(int(item["__check_worker__"]), []).append(_key(item))
    return out


def _loader(pipeline: Any, num_workers: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wds.WebLoader(pipeline.map(tag_worker), num_workers=num_workers, batch_size=None)


def _iterate(make: Callable[[], Any], num_workers: int) -> tuple[Any, Any]:
    """A fresh pipeline's (state holder, iterator): the run itself or a WebLoader with workers."""
    if num_workers == 0:
        it = iter(make())
        return it, it
    loader = _loader(make(), num_workers)
    return loader, iter(loader)


def check_resume(
    make: Callable[[], Any], stop_at: Iterable[int], num_workers: int = 0
) -> list[str]:
    """For each ``k`` in ``stop_at``: ``k`` items, checkpoint, resume in a fresh pipeline.

    In one process (``num_workers=0``) the items before and after must be exactly one
    uninterrupted epoch, in order. With DataLoader workers, whose interleaving restarts with
    the resumed loader, each worker's items before and after must be exactly that worker's
    items of the uninterrupted epoch, in order (so together: the same items, each as often).
    Returns the reference epoch's keys.
    """
    _, it = _iterate(make, num_workers)
    items = list(it)
    reference = [_key(x) for x in items]
    assert reference, "the pipeline under test yields nothing"
    per_worker = _by_worker(items) if num_workers else {}
    if num_workers:
        assert len(per_worker) == num_workers, f"not every worker delivered: {per_worker}"
    for k in stop_at:
        holder, it = _iterate(make, num_workers)
        head = [next(it) for _ in range(k)]
        state = json.loads(json.dumps(holder.state_dict()))
        del it
        if num_workers == 0:
            resumed = make()
            resumed.load_state_dict(state)
            rest = [_key(x) for x in resumed]
            assert [_key(x) for x in head] + rest == reference, f"stopped after {k}: {state}"
        else:
            loader = _loader(make(), num_workers)
            loader.load_state_dict(state)
            tail = list(loader)
            got = _by_worker(head + tail)
            assert got == per_worker, f"stopped after {k} items: {state}"
            assert Counter(_key(x) for x in head + tail) == Counter(reference)
    return reference
