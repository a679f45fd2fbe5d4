"""Offline shard jobs: read a shard → transform its samples → write a shard, fanned out on Dask.

The reference README's per-shard augmentation example, made safe to re-run: an output that
already exists is skipped (so a crashed job resumes where it stopped), and an output appears
under its final name only when complete (``TarWriter`` publishes atomically), so a re-run never
mistakes a half-written shard for a finished one. Inputs and outputs may be any URLs the storage
layer opens, e.g. from one bucket to another.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .samples import tar_samples
from .storage import StorageConfig, filesystem, open_shard
from .storage.local import local_path_of
from .writer import TarWriter

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
        from .codecs import make_decoder

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
    progress: bool = True,
    **kwargs: Any,
) -> list[ShardResult]:
    """Run :func:`process_shard` for every ``(input, output)`` pair on a Dask cluster.

    ``inputs``/``outputs`` are URL lists or brace patterns of equal length. Without ``client``
    a ``LocalCluster`` (processes, loopback only) is started for the job and stopped after.
    ``fn`` must be picklable (a module-level function). Results come back in input order.
    When shards fail, the others still run to completion; then the first failure (in input
    order) is raised, with a note naming how many failed.
    """
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    from .urls import expand_urls

    ins = expand_urls(inputs)
    outs = expand_urls(outputs)
    if len(ins) != len(outs):
        raise ValueError(f"{len(ins)} inputs but {len(outs)} outputs")
    own = None
    if client is None:
        own = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # no dashboard; the scheduler's small HTTP server on a free loopback port (else it
            # takes 8787, or warns when another cluster holds that)
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
        client = Client(own)
    job = uuid.uuid4().hex[:8]
    try:
        futures = [
            client.submit(
                process_shard, i, o, fn, pure=False, key=f"cloudwds-shard-{job}-{n}", **kwargs
            )
            for n, (i, o) in enumerate(zip(ins, outs, strict=True))
        ]
        index = {f.key: n for n, f in enumerate(futures)}
        results: list[ShardResult | None] = [None] * len(futures)
        failed: dict[int, BaseException] = {}
        # Every shard runs to its end even when some fail: the finished ones are published and
        # a re-run only redoes the failed ones. (Raising at the first failure would release the
        # other futures and cancel shards still queued.)
        for future in tqdm(
            as_completed(futures), total=len(futures), unit="shard", disable=not progress
        ):
            n = index[future.key]
            try:
                results[n] = future.result()
            except Exception as exn:
                failed[n] = exn
        if failed:
            first = min(failed)
            error = failed[first]
            error.add_note(
                f"cloudwds.offline.map_shards: {len(failed)} of {len(futures)} shards failed "
                f"(first {ins[first]!r} -> {outs[first]!r}); the others were written, and a "
                "re-run only redoes the failed ones"
            )
            raise error
        return [r for r in results if r is not None]
    finally:
        if own is not None:
            client.close()
            own.close()
