"""cloudwds: stream WebDataset shards from anywhere; ``import cloudwds as wds`` runs webdataset code.

This module only re-exports the public names.
"""

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
    StorageError,
    TarFormatError,
    TruncatedShardError,
)
from .handlers import (
    ignore_and_continue,
    ignore_and_stop,
    reraise_exception,
    warn_and_continue,
    warn_and_stop,
)
from .loader import WebLoader
from .pipeline import DataPipeline, FluidInterface, WebDataset
from .shards import (
    ResampledShards,
    SimpleShardList,
    single_node_only,
    split_by_node,
    split_by_worker,
)
from .sources import cbors_to_samples, msgpack_to_samples, tarfile_to_samples
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
    "FluidInterface",
    "MissingKeyError",
    "PipeError",
    "ResampledShards",
    "ShardError",
    "ShardWriter",
    "SimpleShardList",
    "Stage",
    "StorageConfig",
    "StorageError",
    "TarFormatError",
    "TarWriter",
    "TruncatedShardError",
    "WebDataset",
    "WebLoader",
    "batched",
    "cbors_to_samples",
    "decode",
    "default_collation_fn",
    "expand_urls",
    "handle_extension",
    "ignore_and_continue",
    "ignore_and_stop",
    "imagehandler",
    "make_decoder",
    "make_encoder",
    "map",
    "map_dict",
    "map_tuple",
    "msgpack_to_samples",
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
