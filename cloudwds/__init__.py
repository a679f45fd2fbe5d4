"""cloudwds: stream WebDataset shards from anywhere; ``import cloudwds as wds`` runs webdataset code.

This module only re-exports the public names, and imports each one's module on first use
(PEP 562 ``__getattr__``): ``import cloudwds`` stays cheap, and the ``cloudwds`` command line
(``--help``, ``ls``, ``verify``) never imports torch, whose import alone takes seconds. Code that
says ``wds.WebDataset`` or ``from cloudwds import WebDataset`` sees no difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

# public name → the module (relative to this package) that defines it
_NAMES: dict[str, tuple[str, ...]] = {
    "as_webdataset": ("install_as_webdataset",),
    "autodecode": ("pytorch_weights_only",),
    "cache": ("LRUCleanup", "pipe_cleaner"),
    "codecs": (
        "Decoder",
        "handle_extension",
        "imagehandler",
        "make_decoder",
        "make_encoder",
        "torch_audio",
        "torch_video",
    ),
    "codecs.decoding": ("Continue", "gzfilter"),
    "compat": ("FluidWrapper", "Processor"),
    "dataset": ("WebDataset",),
    "errors": (
        "CloudWdsError",
        "DecodingError",
        "DuplicateMemberError",
        "MemberTooLargeError",
        "MissingKeyError",
        "PipeError",
        "ShardError",
        "ShardNotFoundError",
        "StorageAccessError",
        "StorageError",
        "TarFormatError",
        "TruncatedShardError",
        "UnsafeInputError",
    ),
    "exact": ("ExactEpochSource",),
    "extradatasets": ("MockDataset", "with_epoch", "with_length"),
    "gopen": ("gopen", "gopen_schemes"),
    "extrastages": (
        "Cached",
        "LMDBCached",
        "detshuffle",
        "getfirst",
        "non_empty",
        "transform_with",
    ),
    "filters": ("associate", "extract_keys", "info", "pipelinefilter", "xdecode"),
    "handlers": (
        "ignore_and_continue",
        "ignore_and_stop",
        "reraise_exception",
        "warn_and_continue",
        "warn_and_stop",
    ),
    "index": ("Manifest", "build_index", "find_index", "load_index"),
    "indexed": ("IndexedWebDataset",),
    "loader": ("WebLoader",),
    "mix": ("RandomMix", "RoundRobin"),
    "offline": ("map_shards", "process_shard"),
    "pipeline": ("DataPipeline", "FluidInterface"),
    "resume": ("gather_states",),
    "security": ("torch_loads",),
    "shardlists": ("DirectoryShardList", "MultiShardSample", "resampled", "shardspec"),
    "shards": (
        "ResampledShards",
        "SimpleShardList",
        "single_node_only",
        "split_by_node",
        "split_by_worker",
    ),
    "sources": ("cbors_to_samples", "msgpack_to_samples", "tarfile_to_samples"),
    "spec": ("MixedSource", "SpecError", "load_spec"),
    "stages": (
        "PipelineStage",
        "Stage",
        "batched",
        "decode",
        "default_collation_fn",
        "map",
        "map_dict",
        "map_tuple",
        "rename",
        "rename_keys",
        "rsample",
        "select",
        "shuffle",
        "slice",
        "to_tuple",
        "unbatched",
    ),
    "storage": ("StorageConfig", "register_backend"),
    "tariterators": ("tarfile_samples",),
    "urls": ("expand_urls", "set_rewrites"),
    "utils": ("repeatedly",),
    "writer": ("ShardWriter", "TarWriter", "numpy_dumps", "torch_dumps"),
}

# webdataset's submodules under its names, and the rest of its public API (see docs/migration.md)
_SUBMODULES = frozenset(
    {
        "autodecode",
        "cache",
        "compat",
        "extradatasets",
        "filters",
        "handlers",
        "mix",
        "pipeline",
        "pytorch",
        "shardlists",
        "tariterators",
        "tenbin",
        "utils",
        "writer",
    }
)

_WHERE = {name: module for module, names in _NAMES.items() for name in names}


class _Package(types.ModuleType):
    """This package's module type: keeps the name ``gopen`` bound to the function.

    ``gopen`` is both a submodule and a public function; the import system binds a submodule to
    its parent's attribute when it is first imported (the storage layer imports it), which
    would hide the function ``wds.gopen``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "gopen" and isinstance(value, types.ModuleType):
            value = value.gopen
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first access and cache the value here."""
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f".{name}", __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f".{name}", __name__):
        # any other submodule, as an eager ``import cloudwds`` used to leave them bound
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static checkers and IDEs see every name as if imported eagerly
    from . import (
        autodecode,
        cache,
        compat,
        extradatasets,
        filters,
        handlers,
        mix,
        pipeline,
        pytorch,
        shardlists,
        tariterators,
        tenbin,
        utils,
        writer,
    )
    from .as_webdataset import install_as_webdataset
    from .autodecode import pytorch_weights_only
    from .cache.webdataset_names import LRUCleanup, pipe_cleaner
    from .codecs import (
        Decoder,
        handle_extension,
        imagehandler,
        make_decoder,
        make_encoder,
        torch_audio,
        torch_video,
    )
    from .codecs.decoding import Continue, gzfilter
    from .compat import FluidWrapper, Processor
    from .dataset import WebDataset
    from .errors import (
        CloudWdsError,
        DecodingError,
        DuplicateMemberError,
        MemberTooLargeError,
        MissingKeyError,
        PipeError,
        ShardError,
        ShardNotFoundError,
        StorageAccessError,
        StorageError,
        TarFormatError,
        TruncatedShardError,
        UnsafeInputError,
    )
    from .exact import ExactEpochSource
    from .extradatasets import MockDataset, with_epoch, with_length
    from .extrastages import Cached, LMDBCached, detshuffle, getfirst, non_empty, transform_with
    from .filters import associate, extract_keys, info, pipelinefilter, xdecode
    from .gopen import gopen, gopen_schemes
    from .handlers import (
        ignore_and_continue,
        ignore_and_stop,
        reraise_exception,
        warn_and_continue,
        warn_and_stop,
    )
    from .index import Manifest, build_index, find_index, load_index
    from .indexed import IndexedWebDataset
    from .loader import WebLoader
    from .mix import RandomMix, RoundRobin
    from .offline import map_shards, process_shard
    from .pipeline import DataPipeline, FluidInterface
    from .resume import gather_states
    from .security import torch_loads
    from .shardlists import DirectoryShardList, MultiShardSample, resampled, shardspec
    from .shards import (
        ResampledShards,
        SimpleShardList,
        single_node_only,
        split_by_node,
        split_by_worker,
    )
    from .sources import cbors_to_samples, msgpack_to_samples, tarfile_to_samples
    from .spec import MixedSource, SpecError, load_spec
    from .stages import (
        PipelineStage,
        Stage,
        batched,
        decode,
        default_collation_fn,
        map,
        map_dict,
        map_tuple,
        rename,
        rename_keys,
        rsample,
        select,
        shuffle,
        slice,
        to_tuple,
        unbatched,
    )
    from .storage import StorageConfig, register_backend
    from .tariterators import tarfile_samples
    from .urls import expand_urls, set_rewrites
    from .utils import repeatedly
    from .writer import ShardWriter, TarWriter, numpy_dumps, torch_dumps

__version__ = "0.1.0"

__all__ = [
    "Cached",
    "CloudWdsError",
    "Continue",
    "DataPipeline",
    "Decoder",
    "DecodingError",
    "DirectoryShardList",
    "DuplicateMemberError",
    "ExactEpochSource",
    "FluidInterface",
    "FluidWrapper",
    "IndexedWebDataset",
    "LMDBCached",
    "LRUCleanup",
    "Manifest",
    "MemberTooLargeError",
    "MissingKeyError",
    "MixedSource",
    "MockDataset",
    "MultiShardSample",
    "PipeError",
    "PipelineStage",
    "Processor",
    "RandomMix",
    "ResampledShards",
    "RoundRobin",
    "ShardError",
    "ShardNotFoundError",
    "ShardWriter",
    "SimpleShardList",
    "SpecError",
    "Stage",
    "StorageAccessError",
    "StorageConfig",
    "StorageError",
    "TarFormatError",
    "TarWriter",
    "TruncatedShardError",
    "UnsafeInputError",
    "WebDataset",
    "WebLoader",
    "associate",
    "autodecode",
    "batched",
    "build_index",
    "cache",
    "cbors_to_samples",
    "compat",
    "decode",
    "default_collation_fn",
    "detshuffle",
    "expand_urls",
    "extract_keys",
    "extradatasets",
    "filters",
    "find_index",
    "gather_states",
    "getfirst",
    "gopen",
    "gopen_schemes",
    "gzfilter",
    "handle_extension",
    "handlers",
    "ignore_and_continue",
    "ignore_and_stop",
    "imagehandler",
    "info",
    "install_as_webdataset",
    "load_index",
    "load_spec",
    "make_decoder",
    "make_encoder",
    "map",
    "map_dict",
    "map_shards",
    "map_tuple",
    "mix",
    "msgpack_to_samples",
    "non_empty",
    "numpy_dumps",
    "pipe_cleaner",
    "pipeline",
    "pipelinefilter",
    "process_shard",
    "pytorch",
    "pytorch_weights_only",
    "register_backend",
    "rename",
    "rename_keys",
    "repeatedly",
    "reraise_exception",
    "resampled",
    "rsample",
    "select",
    "set_rewrites",
    "shardlists",
    "shardspec",
    "shuffle",
    "single_node_only",
    "slice",
    "split_by_node",
    "split_by_worker",
    "tarfile_samples",
    "tarfile_to_samples",
    "tariterators",
    "tenbin",
    "to_tuple",
    "torch_audio",
    "torch_dumps",
    "torch_loads",
    "torch_video",
    "transform_with",
    "unbatched",
    "utils",
    "warn_and_continue",
    "warn_and_stop",
    "with_epoch",
    "with_length",
    "writer",
    "xdecode",
]
