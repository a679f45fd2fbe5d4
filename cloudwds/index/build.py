"""Building a manifest: every shard read once, in parallel threads on this machine, or as
per-shard jobs on a Dask cluster (:func:`cloudwds.offline.index_shards`) when given one."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from ..storage import StorageConfig, write_output
from ..urls import expand_urls
from .manifest import Manifest, ShardInfo
from .scan import scan_shard, scan_shard_offsets


def build_index(
    urls: str | Iterable[str],
    storage: StorageConfig | None = None,
    checksum: str | None = "sha256",
    progress: bool | None = False,
    workers: int | None = None,
    offsets: bool = False,
    *,
    client: Any = None,
    scheduler: str | None = None,
    job_dir: str | None = None,
) -> Manifest:
    """Read every shard of ``urls`` (brace patterns allowed) and return their :class:`Manifest`.

    Shards are read by ``workers`` threads (default: up to 8); entries keep the order of
    ``urls``. ``progress`` shows a tqdm bar on stderr (``None``: only on a terminal). The first
    shard that cannot be read raises its error, naming the URL.

    ``offsets=True`` also writes each shard's offsets file (DALI ``wds2idx``, see
    :mod:`cloudwds.indexed.offsets`) next to it, on any store, in the same pass, and records
    its URL in the entry; gzip-compressed shards get ``compressed=True`` and no file.

    With a Dask ``client`` or ``scheduler`` address the shards are read by per-shard tasks on
    that cluster instead, resumable through ``job_dir``
    (:func:`cloudwds.offline.index_shards`, which also starts a ``LocalCluster`` when given
    neither); the manifest is the same.
    """
    if client is not None or scheduler is not None:
        from ..offline import index_shards

        return index_shards(
            urls,
            storage,
            checksum,
            offsets,
            client=client,
            scheduler=scheduler,
            workers=workers,
            job_dir=job_dir,
            progress=progress,
        )
    shard_urls = expand_urls(urls)
    if not shard_urls:
        raise ValueError(f"no shard URLs in {urls!r}")
    storage = storage or StorageConfig.resolve()
    nworkers = max(1, min(workers or 8, len(shard_urls)))
    results: list[ShardInfo | None] = [None] * len(shard_urls)
    from tqdm import tqdm

    bar = tqdm(
        total=len(shard_urls),
        unit="shard",
        desc="index",
        disable=None if progress is None else not progress,
    )
    with bar, ThreadPoolExecutor(nworkers, thread_name_prefix="cloudwds-index") as pool:
        futures = {
            pool.submit(index_one, url, storage, checksum, offsets): i
            for i, url in enumerate(shard_urls)
        }
        try:
            for future in as_completed(futures):
                info = future.result()
                results[futures[future]] = info
                bar.update(1)
                bar.set_postfix(samples=sum(r.samples for r in results if r), refresh=False)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return Manifest(shards=[r for r in results if r is not None])


def index_one(url: str, storage: StorageConfig, checksum: str | None, offsets: bool) -> ShardInfo:
    if not offsets:
        return scan_shard(url, storage, checksum=checksum)
    from ..indexed.offsets import offsets_url

    info, table = scan_shard_offsets(url, storage, checksum=checksum)
    if table is not None:
        target = offsets_url(url)
        write_output(target, table.to_idx(), storage)
        info.offsets = target
    return info
