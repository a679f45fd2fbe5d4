"""``build_index`` as per-shard jobs on Dask, resumable: a re-run reads only what is missing.

Each shard is read by one task (:func:`cloudwds.index.index_one`, the function the threaded
build uses, so the entries are the same), which also publishes its ``.idx`` next to the shard.
The task's :class:`~cloudwds.index.ShardInfo` comes back to the driver, which publishes it as a
part (:mod:`.parts`) with the shard's identity. A re-run skips a shard whose part is there, was
made with the same options, and whose shard — and ``.idx``, when offsets are written — is still
in place unchanged; the manifest is assembled from the parts in input order, so it equals the
single-machine result. The parts are deleted once the manifest is saved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from ..index import Manifest, ShardInfo, index_one
from ..storage import StorageConfig, object_identities
from ..urls import expand_urls
from .parts import PartStore, default_job_dir, identity_matches, part_key
from .runner import run_jobs

__all__ = ["index_shards"]


def index_shards(
    urls: str | Iterable[str],
    storage: StorageConfig | None = None,
    checksum: str | None = "sha256",
    offsets: bool = False,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    job_dir: str | None = None,
    output: str | None = None,
    progress: bool | None = False,
) -> Manifest:
    """Index ``urls`` on Dask (``client``, ``scheduler`` address, or a ``LocalCluster`` of
    ``workers`` processes) and return the :class:`~cloudwds.index.Manifest`.

    Finished shards are recorded under ``job_dir`` (default: per-user cache, named by the
    inputs) so that a re-run after a crash or a failed shard only reads the shards left. When
    shards fail, the others still finish, then the first failure is raised with a note naming
    the failed URLs. ``output`` saves the manifest there (any URL); the parts are removed once
    the manifest is complete (and saved, with ``output``).
    """
    shard_urls = expand_urls(urls)
    if not shard_urls:
        raise ValueError(f"no shard URLs in {urls!r}")
    storage = storage or StorageConfig.resolve()
    parts = PartStore(job_dir or default_job_dir("index", shard_urls, checksum, offsets), storage)
    options = {"checksum": checksum, "offsets": offsets}
    keys = [part_key(u) for u in shard_urls]
    found = parts.load(keys)
    n = len(shard_urls)
    watched = shard_urls + _offsets_urls(shard_urls) if offsets else shard_urls
    identities = object_identities(watched, storage)
    infos: list[ShardInfo | None] = [None] * n
    for i, url in enumerate(shard_urls):
        part = found.get(keys[i])
        if part is None or part.get("url") != url or part.get("options") != options:
            continue
        if not identity_matches(part.get("identity"), identities[i]):
            continue
        info = ShardInfo(**part["info"])
        if offsets and info.offsets is not None and _gone(identities[i], identities[n + i]):
            continue  # the .idx was deleted: read the shard again to rewrite it
        infos[i] = info
    todo = [i for i in range(n) if infos[i] is None]

    with parts.publisher() as put:

        def publish(k: int, info: ShardInfo) -> None:
            i = todo[k]
            infos[i] = info
            doc = {"url": shard_urls[i], "identity": identities[i], "options": options}
            put(keys[i], {**doc, "info": asdict(info)})

        outcome = run_jobs(
            index_one,
            [(shard_urls[i], storage, checksum, offsets) for i in todo],
            [shard_urls[i] for i in todo],
            client=client,
            scheduler=scheduler,
            workers=workers,
            progress=progress,
            desc="index",
            on_result=publish,
        )
    outcome.raise_failures("cloudwds index")
    manifest = Manifest(shards=[info for info in infos if info is not None])
    if output is not None:
        manifest.save(output, storage)
    parts.remove()
    return manifest


def _offsets_urls(shard_urls: list[str]) -> list[str]:
    from ..indexed.offsets import offsets_url

    return [offsets_url(u) for u in shard_urls]


def _gone(shard: dict[str, Any], idx: dict[str, Any]) -> bool:
    """The listing that showed the shard does not show its ``.idx``."""
    return "size" in shard and "size" not in idx
