"""Batches that cross the DataLoader's process boundary through reused shared memory.

``WebLoader(ds.decode("rgb8").to_tuple("jpg", "cls").batched(64), num_workers=2,
batch_size=None, shared_batches=True)``.

Why: on the plain path a worker stacks each batch into a fresh array (``np.stack``), and
``torch`` then copies that array into a *new* shared-memory segment to send it to the main
process, which maps it again: two fresh 12.6 MB allocations (page faults on every page), one
extra 12.6 MB copy and a new mapping per batch. Here each worker keeps a small ring of
shared-memory slots (created as needed, at most ``ring``, 8 by default: a worker has at most two batches
in flight by the DataLoader's default ``prefetch_factor``, and the caller holds one or two);
the batch's fixed-shape array columns are stacked *straight into* a free
slot (``np.stack(..., out=)``). The slot, already shared, travels as a file descriptor
(torch's own reduction, no copy) only the first time: the main process keeps every slot it
received mapped while the worker that made it lives (a process-wide table by worker pid, slot
index and creation time) and says so in the slot's header (byte 1), so every later batch in
that slot carries just its key and layout. Passing a descriptor costs a connection to the
worker's resource-sharer thread with an HMAC handshake, about 1.7 ms of the main process per
batch, which this saves. The user gets the same structure and types as the plain path
(``default_convert`` of the collated batch: tensors, lists).

Recycling: byte 0 of every slot is its state, written by both processes through the same
memory (1 = in use, 0 = free). The worker sets it when it fills the slot; the main process
clears it when the last array or tensor built on the slot is garbage (a ``weakref.finalize``
on the one ``ndarray`` every column is a view of: ``torch.as_tensor`` and any later views,
slices or tensors made from them keep it alive). So a batch the user keeps is never
overwritten: its slot stays in use, and the worker takes another free slot, adds a slot while
the ring is below ``ring`` slots, and otherwise collates that batch the plain way (fresh
buffers). A batch received but never handed out (a pass abandoned midway, a persistent worker's
stale prefetch) frees its slot when the descriptor itself is dropped.

What goes through the slots: columns of numeric ``numpy`` arrays or CPU tensors of one shape
and dtype, in batches of tuples, lists, dicts or bare arrays, made by the pipeline's last stage
``batched(...)`` with the default collation. Everything else in a batch (labels, strings, keys)
is collated as usual and pickled. A batch larger than the slots (variable shapes) or too small
to be worth it (< ``min_bytes``) takes the plain path, and so does one that would need a new
slot when ``/dev/shm`` would then have less than a slot's size left (``reserve``): a ring holds
its slots for the whole pass, and a full tmpfs ends a process with SIGBUS, not an error. With ``pin_memory=True`` and an
accelerator, the tensors are pinned (a copy) in the main process and the slot is free at once.
"""

from __future__ import annotations

import copy
import os
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .buffers import batched, default_collation_fn

__all__ = [
    "RECEIVED",
    "SLOTS",
    "SharedBatch",
    "SharedCollate",
    "forget_dead_workers",
    "install",
    "receive_all",
]

HEADER = 64  # byte 0: slot state, byte 1: mapped by the consumer; columns start at 64
ALIGN = 64
FREE, USED = 0, 1
STATE, MAPPED = 0, 1  # header bytes
# batches this process received from workers: through a slot ("shared") or otherwise ("plain"),
# and how many of the shared ones brought the slot's file descriptor ("descriptors")
RECEIVED: dict[str, int] = {"shared": 0, "plain": 0, "descriptors": 0}
# consumer side: the slots received so far, by key (worker pid, slot index, creation time), so a
# batch in a slot seen before is sent without its file descriptor; see forget_dead_workers
SLOTS: dict[tuple[int, int, int], Any] = {}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _numeric_column(column: list[Any]) -> list[np.ndarray] | None:
    """``column`` as a list of same-shape numeric ndarrays (CPU tensors viewed), or None."""
    first = column[0]
    if isinstance(first, np.ndarray):
        arrays = column
    elif type(first).__module__.startswith("torch") and hasattr(first, "numpy"):
        try:
            arrays = [t.numpy() for t in column]  # CPU, no grad, numpy dtype: a view
        except (TypeError, RuntimeError):
            return None
    else:
        return None
    a0 = arrays[0]
    if a0.dtype.kind not in "biufc":
        return None
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.shape != a0.shape or a.dtype != a0.dtype:
            return None  # mixed shapes: the plain path raises the usual error
    return arrays


def _shared_bytes(torch: Any, nbytes: int) -> Any:
    """A new uint8 tensor of ``nbytes`` in shared memory, its pages not yet touched.

    ``torch.empty(n).share_memory_()`` allocates private memory, then new shared memory and
    copies one into the other: every page of the slot faulted in twice over (~4 ms of a
    worker's CPU per 12.6 MB slot, in every epoch). ``UntypedStorage._new_shared`` (what
    ``share_memory_`` calls for its new storage) gives the shared storage alone.
    """
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is None:  # a torch without it: the public way
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes))


class _Slot:
    """One reusable shared buffer of a worker's ring."""

    def __init__(self, index: int, nbytes: int):
        import torch

        self.index = index
        # unique even when a later worker gets this pid again
        self.key = (os.getpid(), index, time.monotonic_ns())
        self.tensor = _shared_bytes(torch, nbytes)
        self.array = self.tensor.numpy()
        self.array[STATE] = FREE
        self.array[MAPPED] = 0

    @property
    def free(self) -> bool:
        return int(self.array[STATE]) == FREE


class SharedBatch:
    """A collated batch whose array columns live in a worker's shared slot (internal).

    Pickled, it is the slot's key, the layout and the small pickled columns, plus the slot
    tensor (a file descriptor, by torch's reduction) until the consumer has mapped the slot.
    The copy unpickled in the main process owns the slot's "in use" state until
    :meth:`materialize` hands it to the returned arrays.
    """

    def __init__(
        self,
        slot: Any,
        key: tuple[int, int, int],
        kind: str,
        names: list[Any] | None,
        columns: list[tuple[str, Any]],
    ):
        self.slot = slot  # uint8 shared tensor: the whole slot
        self.key = key  # (worker pid, slot index, slot creation time)
        self.kind = kind  # tuple | list | dict | bare
        self.names = names  # dict keys
        self.columns = columns  # ("shm", (offset, shape, dtype str)) | ("obj", value)
        self._owned = False  # True only in the unpickled copy, until materialized

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_owned", None)
        if self.slot is not None and self.slot.numpy()[MAPPED]:
            state["slot"] = None  # the consumer has this slot mapped: the key finds it
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.slot is None:
            self.slot = SLOTS.get(self.key)
        else:
            SLOTS[self.key] = self.slot
            RECEIVED["descriptors"] += 1
            self.slot.numpy()[MAPPED] = 1  # the worker may send just the key from now on
        self._owned = self.slot is not None

    def materialize(self, pin: bool = False) -> Any:
        """The batch as the plain path makes it (before ``default_convert``), on the slot."""
        if self.slot is None:
            raise RuntimeError(
                f"shared batch from worker pid {self.key[0]}, slot {self.key[1]}: the slot was "
                "never received by this process (a shared batch has one consumer)"
            )
        anchor = self.slot.numpy()  # every column below is a view whose base is this array
        flag = self.slot.numpy()[:1]  # another array on the slot: must not keep anchor alive
        out: list[Any] = []
        for what, value in self.columns:
            if what == "shm":
                offset, shape, dtype = value
                out.append(np.ndarray(shape, np.dtype(dtype), buffer=anchor, offset=offset))
            else:
                out.append(value)
        weakref.finalize(anchor, _release, flag)
        self._owned = False
        del anchor
        if pin:
            out = [_pinned(c) for c in out]
        if self.kind == "bare":
            return out[0]
        if self.kind == "dict":
            assert self.names is not None
            return dict(zip(self.names, out, strict=True))
        return tuple(out)

    def __del__(self) -> None:
        if getattr(self, "_owned", False):
            try:
                _release(self.slot.numpy()[:1])
            except Exception:  # noqa: BLE001 - interpreter shutdown: nobody is left to reuse the slot
                pass


SHM_DIR = "/dev/shm"


def _shm_room(nbytes: int, reserve: int) -> bool:
    """Whether ``/dev/shm`` keeps ``reserve`` bytes free after a new ``nbytes`` slot.

    Shared memory is a tmpfs file: touching pages past its size limit kills the process with
    SIGBUS rather than raising. Containers often mount a small one (Docker: 64 MB), and a ring
    holds several batch-sized slots for the whole pass where the plain path holds each batch
    only in transit, so a slot is added only while the rest of the batches (the plain path,
    other workers) keep room. Where there is no ``/dev/shm`` to measure, the ring is used.
    """
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return True
    return st.f_bavail * st.f_frsize >= nbytes + reserve


def _release(flag: np.ndarray) -> None:
    flag[STATE] = FREE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process (someone else's) has the pid
    return True


def forget_dead_workers() -> None:
    """Unmap the slots of workers that have exited (a pass's workers, when it ended).

    Slots of live workers stay: a persistent worker sends only the key of a slot it sent
    before, and a worker is the only writer of its slots' keys, so a key is never looked up
    after its worker is gone.
    """
    for key in [k for k in SLOTS if not _alive(k[0])]:
        del SLOTS[key]


def _pinned(column: Any) -> Any:
    if not isinstance(column, np.ndarray):
        return column
    import torch

    return torch.from_numpy(column).pin_memory()  # a copy: the slot is free once it returns


class SharedCollate:
    """Collation function of the workers' last ``batched`` stage: stacks into the ring.

    Values and structure are :func:`cloudwds.buffers.default_collation_fn`'s; only where the
    array columns live differs. The ring is per process and never pickled (each worker builds
    its own, with fork or spawn).
    """

    def __init__(self, ring: int = 8, min_bytes: int = 1 << 16, reserve: int | None = None):
        if ring < 1:
            raise ValueError(f"ring must be >= 1, got {ring}")
        self.ring = ring
        self.min_bytes = min_bytes
        # bytes of shared memory to leave free when adding a slot (None: as many as the slot)
        self.reserve = reserve
        self._slots: list[_Slot] = []
        self._pid = 0
        self.fallbacks = 0  # batches collated the plain way (all slots held, or too large)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slots"] = []
        state["_pid"] = 0
        return state

    def __copy__(self) -> SharedCollate:
        return SharedCollate(self.ring, self.min_bytes, self.reserve)

    def _slot(self, nbytes: int) -> _Slot | None:
        pid = os.getpid()
        if pid != self._pid:  # a forked copy: the parent's slots are not ours to reuse
            self._slots, self._pid = [], pid
        for slot in self._slots:
            if slot.free and slot.array.nbytes >= nbytes:
                return slot
        if len(self._slots) < self.ring:
            size = max([nbytes] + [s.array.nbytes for s in self._slots])
            if not _shm_room(size, size if self.reserve is None else self.reserve):
                return None
            slot = _Slot(len(self._slots), size)
            self._slots.append(slot)
            return slot
        return None

    def __call__(self, samples: list[Any]) -> Any:
        first = samples[0]
        names: list[Any] | None = None
        if isinstance(first, dict):
            kind = "dict"
            names = list(first.keys())
            columns = [[s[k] for s in samples] for k in names]
        elif isinstance(first, (tuple, list)):
            kind = "tuple"
            columns = [list(c) for c in zip(*samples, strict=True)]
        else:
            kind = "bare"
            columns = [list(samples)]
        plan: list[tuple[list[Any] | None, Any]] = []
        total = HEADER
        for column in columns:
            arrays = _numeric_column(column)
            if arrays is None:
                plan.append((None, column))
            else:
                plan.append((arrays, total))
                total += _align(len(arrays) * arrays[0].nbytes)
        if total == HEADER or total - HEADER < self.min_bytes:
            return default_collation_fn(samples)
        slot = self._slot(total)
        if slot is None:
            self.fallbacks += 1
            return default_collation_fn(samples)
        slot.array[STATE] = USED
        described: list[tuple[str, Any]] = []
        for (arrays, where), column in zip(plan, columns, strict=True):
            if arrays is None:
                # what default_collation_fn does with this column, on a one-column batch
                described.append(("obj", default_collation_fn([(c,) for c in column])[0]))
                continue
            a0 = arrays[0]
            shape = (len(arrays), *a0.shape)
            out = np.ndarray(shape, a0.dtype, buffer=slot.array, offset=where)
            np.stack(arrays, out=out)
            described.append(("shm", (where, shape, a0.dtype.str)))
        return SharedBatch(slot.tensor, slot.key, kind, names, described)


def install(pipeline: Any, ring: int = 8) -> bool:
    """Make ``pipeline``'s last stage collate into shared slots, in place; False if it can't.

    Only a last ``batched`` stage with the default collation qualifies: a later stage would see
    the slot descriptor instead of the batch.
    """
    stages = getattr(pipeline, "pipeline", None)
    if not stages:
        return False
    last = stages[-1]
    if not isinstance(last, batched) or last.collation_fn is not default_collation_fn:
        return False
    stage = copy.copy(last)
    stage.collation_fn = SharedCollate(ring=ring)
    pipeline.pipeline = [*stages[:-1], stage]  # a new list: copies may share the old one
    return True


def receive_all(it: Iterator[Any], pin: bool = False) -> Iterator[Any]:
    """Main process: turn every :class:`SharedBatch` from ``it`` into the plain path's batch.

    Each slot is mapped once (see :data:`SLOTS`); the slots of workers that have exited are
    unmapped when a pass starts and when it ends.
    """
    from torch.utils.data._utils.collate import default_convert

    if pin:
        import torch

        pin = torch.cuda.is_available()
    forget_dead_workers()
    try:
        for item in it:
            if isinstance(item, SharedBatch):
                item = default_convert(item.materialize(pin=pin))  # type: ignore[no-untyped-call]
                RECEIVED["shared"] += 1
            else:
                RECEIVED["plain"] += 1
            yield item
            del item  # while waiting for the next one, only the caller holds this batch
    finally:
        forget_dead_workers()
