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


def _loader(pipeline: Any, num_workers: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wds.WebLoader(pipeline, num_workers=num_workers, batch_size=None)


def _iterate(make: Callable[[], Any], num_workers: int) -> tuple[Any, Any]:
    """A fresh pipeline's (state holder, iterator): the run itself or a 2-worker WebLoader."""
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
    uninterrupted epoch, in order; with DataLoader workers (whose interleaving restarts with
    the resumed loader) the same items, each as often. Returns the reference epoch's keys.
    """
    _, it = _iterate(make, num_workers)
    reference = [_key(x) for x in it]
    assert reference, "the pipeline under test yields nothing"
    for k in stop_at:
        holder, it = _iterate(make, num_workers)
        head = [_key(next(it)) for _ in range(k)]
        state = json.loads(json.dumps(holder.state_dict()))
        del it
        if num_workers == 0:
            resumed = make()
            resumed.load_state_dict(state)
            rest = [_key(x) for x in resumed]
            assert head + rest == reference, f"stopped after {k} items: {state}"
        else:
            loader = _loader(make(), num_workers)
            loader.load_state_dict(state)
            rest = [_key(x) for x in loader]
            assert Counter(head + rest) == Counter(reference), f"stopped after {k} items: {state}"
    return reference
