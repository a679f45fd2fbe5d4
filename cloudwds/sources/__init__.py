"""Sources: where a pipeline's samples come from.

- :mod:`.tar` — stages expanding shard items into samples (tar, CBOR, MsgPack), with prefetch;
- :mod:`.exact` — :class:`ExactEpochSource`, every sample once per epoch, resumable;
- :mod:`.counts` — samples per shard for exact epochs (index, or counted and remembered);
- :mod:`.mixed` — :class:`MixedSource`, the sample mix of a dataset spec.

This package replaced ``cloudwds/sources.py``: every name that module had is importable here.
"""

from __future__ import annotations

from .tar import (
    _ExpandRun,
    _read_to_end,
    _rename_select,
    _ShardExpander,
    _url_and_storage,
    cbors_to_samples,
    msgpack_to_samples,
    tarfile_to_samples,
)

__all__ = [
    "cbors_to_samples",
    "msgpack_to_samples",
    "tarfile_to_samples",
]

# private names of the old module, re-exported for code that reached into it
_PRIVATE = (_ExpandRun, _ShardExpander, _read_to_end, _rename_select, _url_and_storage)
