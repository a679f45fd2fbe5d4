"""Per-shard transforms: read a shard → transform its samples → write a shard, fanned out on Dask.

The reference README's per-shard augmentation example, made safe to re-run: an output that
already exists is skipped (so a crashed job resumes where it stopped), and an output appears
under its final name only when complete (``TarWriter`` publishes atomically), so a re-run never
mistakes a half-written shard for a finished one. Inputs and outputs may be any URLs the storage
layer opens, e.g. from one bucket to another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..samples import tar_samples
from ..storage import StorageConfig, filesystem, open_shard
from ..storage.local import local_path_of
from ..writer import TarWriter

SampleFn = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class ShardResult:
    """What one shard job did: ``skipped`` when its output already existed."""

    input: str
    output: str
    samples_in: int
    samples_out: int
    skipped: bool = False


def output_exists(url: str, storage: StorageConfig) -> bool:
    """True when ``url`` names an existing, complete shard (partial outputs use temp names)."""
    path = local_path_of(url)
    if path is not None:
        import os

        return os.path.exists(path)
    fs, fspath = filesystem(url, storage.storage_options)
    fs.invalidate_cache()
    return bool(fs.exists(fspath))


def process_shard(
    input_url: str,
    output_url: str,
    fn: SampleFn,
    *,
    decode: Sequence[Any] | None = None,
    encoder: Any = True,
    storage_options: Mapping[str, Any] | None = None,
    output_storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ShardResult:
    """Transform one shard. ``fn(sample)`` returns a sample, a list of samples, or None (drop).

    ``decode`` (e.g. ``["pil"]``) decodes samples before ``fn``; outputs are encoded by
    extension (``encoder=True``) like ``TarWriter``.
    """
    source = StorageConfig.resolve(storage_options=storage_options)
    sink = StorageConfig.resolve(storage_options=output_storage_options or storage_options)
    if not overwrite and output_exists(output_url, sink):
        return ShardResult(input_url, output_url, 0, 0, skipped=True)
    decoder = None
    if decode is not None:
        from ..codecs import make_decoder

        decoder = make_decoder(*decode)
    n_in = n_out = 0
    with (
        open_shard(input_url, source) as opened,
        TarWriter(output_url, encoder=encoder, storage=sink) as out,
    ):
        for sample in tar_samples(opened.stream, input_url, opened.local_path):
            n_in += 1
            if decoder is not None:
                sample = decoder(sample)
            result = fn(sample)
            if result is None:
                continue
            for item in result if isinstance(result, list) else [result]:
                out.write(item)
                n_out += 1
    return ShardResult(input_url, output_url, n_in, n_out)


def map_shards(
    fn: SampleFn,
    inputs: str | Iterable[str],
    outputs: str | Iterable[str],
    *,
    client: Any = None,
    scheduler: str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> list[ShardResult]:
    """Run :func:`process_shard` for every ``(input, output)`` pair on a Dask cluster.

    ``inputs``/``outputs`` are URL lists or brace patterns of equal length. The cluster is
    ``client``, else a client on the ``scheduler`` address, else a ``LocalCluster`` (processes,
    loopback only) started for the job and stopped after (:func:`.runner.dask_client`).
    ``fn`` must be picklable (a module-level function). Results come back in input order.
    When shards fail, the others still run to completion; then the first failure (in input
    order) is raised, with a note naming how many failed and which.
    """
    from ..urls import expand_urls
    from .runner import run_jobs

    ins = expand_urls(inputs)
    outs = expand_urls(outputs)
    if len(ins) != len(outs):
        raise ValueError(f"{len(ins)} inputs but {len(outs)} outputs")
    outcome = run_jobs(
        process_shard,
        [(i, o, fn) for i, o in zip(ins, outs, strict=True)],
        [f"{i} -> {o}" for i, o in zip(ins, outs, strict=True)],
        client=client,
        scheduler=scheduler,
        progress=progress,
        desc="map_shards",
        **kwargs,
    )
    outcome.raise_failures("cloudwds.offline.map_shards")
    return [r for r in outcome.results if r is not None]
