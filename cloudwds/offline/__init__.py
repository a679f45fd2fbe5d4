"""Offline per-shard jobs on Dask: transforming shards, and the index, verify and reshard jobs.

:mod:`.runner` runs one task per shard on a ``distributed.Client``, a scheduler address or a
``LocalCluster`` started for the job; :mod:`.parts` records finished shards so a re-run does
only what is missing; :mod:`.transform` is ``map_shards`` (read → transform → write);
:mod:`.indexing` builds a manifest on Dask.
"""

from .indexing import index_shards
from .parts import PartStore, default_job_dir, identity_matches, part_key
from .runner import JobOutcome, dask_client, run_jobs
from .transform import SampleFn, ShardResult, map_shards, output_exists, process_shard

__all__ = [
    "JobOutcome",
    "PartStore",
    "SampleFn",
    "ShardResult",
    "dask_client",
    "default_job_dir",
    "identity_matches",
    "index_shards",
    "map_shards",
    "output_exists",
    "part_key",
    "process_shard",
    "run_jobs",
]
