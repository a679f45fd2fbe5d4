"""webdataset's ``shardlists`` module: shard sources, splitters and URL expansion over cloudwds.

``expand_urls`` (used by open_clip and timm as ``wds.shardlists.expand_urls``) splits on ``::``,
substitutes ``${NAME}`` from ``WDS_NAME`` and brace-expands. ``SimpleShardList`` and
``ResampledShards`` are cloudwds's shard sources (seeded by the pipeline's epoch, carrying the
storage settings); a list given to them is taken literally, as in webdataset.

``MultiShardSample`` (and ``shardspec`` of a ``.yaml`` file) is refused: webdataset itself marks
it obsolete; cloudwds's dataset specs (:func:`cloudwds.load_spec`, ``WebDataset("spec.yaml")``)
replace it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from .directory import (
    DirectoryShardList,
    check_pid_is_running,
    get_pid_from_filename,
    without_last_extension,
)
from .extrastages import non_empty
from .extrastages import resampled as resampled_
from .filters import pipelinefilter
from .shards import (
    ResampledShards,
    SimpleShardList,
    single_node_only,
    split_by_node,
    split_by_worker,
)
from .urls import envlookup, envsubst, expand_urls
from .utils import is_iterable

__all__ = [
    "DirectoryShardList",
    "MSSource",
    "MultiShardSample",
    "ResampledShardList",
    "ResampledShards",
    "SimpleShardList",
    "check_pid_is_running",
    "envlookup",
    "envsubst",
    "expand",
    "expand_source",
    "expand_urls",
    "get_pid_from_filename",
    "non_empty",
    "resampled",
    "resampled_",
    "shardspec",
    "single_node_only",
    "split_by_node",
    "split_by_worker",
    "without_last_extension",
]

ResampledShardList = ResampledShards
resampled = pipelinefilter(resampled_)


def expand_source(source: Any, max_urls: int = int(1e9)) -> list[str]:
    """A string expanded, a list as is, any other iterable read up to ``max_urls`` items."""
    if isinstance(source, str):
        return expand_urls(source)
    if isinstance(source, list):
        return source
    if is_iterable(source):
        return list(itertools.islice(source, max_urls))
    raise ValueError(f"cannot handle {type(source)}")


def expand(s: str) -> str:
    """``~`` and ``$VAR`` expanded."""
    return os.path.expanduser(os.path.expandvars(s))


@dataclass
class MSSource:
    """One dataset of webdataset's obsolete multi-shard spec (kept for imports)."""

    name: str = ""
    perepoch: int = -1
    resample: bool = False
    urls: list[str] = field(default_factory=list)


_MULTISHARD_REFUSAL = (
    "MultiShardSample (webdataset's YAML shard spec) is not supported by cloudwds; webdataset "
    "itself marks it obsolete. Use a cloudwds dataset spec instead: "
    "WebDataset('spec.yaml') or cloudwds.load_spec('spec.yaml') (see docs/migration.md)"
)


class MultiShardSample:
    """Refused (obsolete in webdataset too): use cloudwds dataset specs."""

    def __init__(self, fname: Any):
        raise NotImplementedError(_MULTISHARD_REFUSAL)


def shardspec(spec: str) -> Any:
    """A ``SimpleShardList`` for a URL spec; ``.yaml`` specs are refused (see MultiShardSample)."""
    if spec.endswith(".yaml"):
        return MultiShardSample(spec)
    return SimpleShardList(spec)
