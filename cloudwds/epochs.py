"""Epoch numbers that reach DataLoader workers, whether they are re-created or persistent.

Each worker slot holds the epoch its next iteration will use, in shared memory: forked workers
inherit the mapping, spawned workers receive it while being spawned, and persistent workers see
``set_epoch`` calls made later in the main process. A worker takes its slot's value when it
starts an iteration and advances it, so without ``set_epoch`` every new iteration is a new epoch
— also for a plain ``DataLoader`` whose workers are re-created (and would otherwise start from a
fresh copy of the dataset every time).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from multiprocessing import context, sharedctypes
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .world import dataloader_worker_info

SLOTS = 1024  # DataLoader worker ids are < num_workers; far fewer than this in practice


def _dataloader_worker() -> int | None:
    """The DataLoader worker id of this process, None outside DataLoader workers."""
    info = dataloader_worker_info()
    return None if info is None else int(info.id)


class EpochCounter:
    """Per-worker next-epoch numbers in shared memory (see module doc).

    The shared array is only allocated when it can matter: when an iteration takes an epoch,
    before the process forks (DataLoader workers), or when the counter is sent to a process
    being spawned. Fluent copies that are never iterated cost a few bytes, not 1024 slots.
    """

    def __init__(self, epoch: int = 0):
        self._epoch = int(epoch)  # every slot's value until the array exists
        self._slots: Any = None
        _LAZY.add(self)

    def _shared(self) -> Any:
        if self._slots is None:
            slots = sharedctypes.RawArray("q", SLOTS)
            for i in range(SLOTS):  # every slot, also for a counter created inside a worker
                slots[i] = self._epoch
            self._slots = slots
            _LAZY.discard(self)
        return self._slots

    def set(self, epoch: int) -> None:
        """Every worker's next iteration uses ``epoch``.

        Called inside a DataLoader worker (``load_state_dict`` run there by torchdata's
        ``StatefulDataLoader``), only that worker's slot is set: the other workers share the
        memory and may already have taken and advanced theirs, which this must not undo.
        """
        if self._slots is None and _dataloader_worker() is None:
            self._epoch = int(epoch)
            return
        slots = self._shared()
        worker = _dataloader_worker()
        if worker is not None:
            slots[worker % SLOTS] = int(epoch)
            return
        for i in range(SLOTS):
            slots[i] = int(epoch)

    def peek(self, worker: int | None = None) -> int:
        """The epoch ``worker``'s next iteration will use (default: this process's worker slot,
        slot 0 outside DataLoader workers)."""
        if self._slots is None:
            return self._epoch
        if worker is None:
            worker = _dataloader_worker() or 0
        return int(self._slots[worker % SLOTS])

    def take(self, worker: int = 0) -> int:
        """The epoch for this worker's new iteration; the slot advances by one."""
        slots = self._shared()
        i = worker % SLOTS
        epoch = int(slots[i])
        slots[i] = epoch + 1
        return epoch

    def __getstate__(self) -> dict[str, Any]:
        # Shared memory can only travel to a process being spawned; a plain pickle (a copy of the
        # dataset) gets its own counter starting where this one is.
        if context.get_spawning_popen() is not None:
            return {"slots": self._shared()}
        if self._slots is None:
            return {"epoch": self._epoch}
        return {"values": list(self._slots)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._epoch = int(state.get("epoch", 0))
        self._slots = None
        if "slots" in state:
            self._slots = state["slots"]
        elif "values" in state:
            self._epoch = int(state["values"][0])
            slots = self._shared()
            for i, v in enumerate(state["values"]):
                slots[i] = v
        else:
            _LAZY.add(self)


# Counters without their array get one before a fork, so forked (persistent) DataLoader workers
# share it with the main process.
_LAZY: weakref.WeakSet[EpochCounter] = weakref.WeakSet()


def _share_before_fork() -> None:
    for counter in list(_LAZY):
        counter._shared()


os.register_at_fork(before=_share_before_fork)
# An array created while a process is being spawned (in __getstate__) must still pickle: the
# spawning pickler only knows the ctypes types registered before it started.
ForkingPickler.register(ctypes.c_longlong * SLOTS, sharedctypes.reduce_ctype)  # type: ignore[attr-defined]
