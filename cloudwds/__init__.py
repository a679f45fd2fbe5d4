"""cloudwds: stream WebDataset shards from anywhere; ``import cloudwds as wds`` runs webdataset code.

This module only re-exports the public names.
"""

from .as_webdataset import install_as_webdataset
from .codecs import (
    Decoder,
    handle_extension,
    imagehandler,
    make_decoder,
    make_encoder,
    torch_audio,
    torch_video,
)
from .errors import (
    CloudWdsError,
    DecodingError,
    DuplicateMemberError,
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
from .handlers import (
    ignore_and_continue,
    ignore_and_stop,
    reraise_exception,
    warn_and_continue,
    warn_and_stop,
)
from .index import Manifest, build_index, find_index, load_index
from .loader import WebLoader
from .offline import map_shards, process_shard
from .pipeline import DataPipeline, FluidInterface, WebDataset
from .resume import gather_states
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
from .storage import StorageConfig
from .urls import expand_urls, set_rewrites
from .writer import ShardWriter, TarWriter

__version__ = "0.1.0"

__all__ = [
    "CloudWdsError",
    "DataPipeline",
    "Decoder",
    "DecodingError",
    "DuplicateMemberError",
    "ExactEpochSource",
    "FluidInterface",
    "Manifest",
    "MissingKeyError",
    "MixedSource",
    "PipeError",
    "ResampledShards",
    "ShardError",
    "ShardNotFoundError",
    "StorageAccessError",
    "ShardWriter",
    "SimpleShardList",
    "SpecError",
    "Stage",
    "StorageConfig",
    "StorageError",
    "TarFormatError",
    "TarWriter",
    "TruncatedShardError",
    "UnsafeInputError",
    "WebDataset",
    "WebLoader",
    "batched",
    "build_index",
    "cbors_to_samples",
    "decode",
    "default_collation_fn",
    "expand_urls",
    "find_index",
    "gather_states",
    "handle_extension",
    "ignore_and_continue",
    "ignore_and_stop",
    "imagehandler",
    "install_as_webdataset",
    "load_index",
    "load_spec",
    "make_decoder",
    "make_encoder",
    "map",
    "map_dict",
    "map_shards",
    "map_tuple",
    "msgpack_to_samples",
    "process_shard",
    "rename",
    "rename_keys",
    "reraise_exception",
    "rsample",
    "select",
    "set_rewrites",
    "shuffle",
    "single_node_only",
    "slice",
    "split_by_node",
    "split_by_worker",
    "tarfile_to_samples",
    "to_tuple",
    "torch_audio",
    "torch_video",
    "unbatched",
    "warn_and_continue",
    "warn_and_stop",
]
