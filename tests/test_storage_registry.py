"""cloudwds.storage.registry and .target: schemes plug in through one table; each URL resolved once.

Remote-looking URLs here use fsspec's real in-memory filesystem (``memory://``), which reaches
the storage layer through the fsspec fallback back end exactly like ``gs://`` would.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import fsspec
import pytest

import cloudwds as wds
from cloudwds.cache import ShardCache
from cloudwds.errors import StorageError, UnsafeInputError
from cloudwds.storage import (
    FsspecBackend,
    StorageConfig,
    Target,
    get_backend,
    is_remote,
    known_schemes,
    object_identities,
    open_output,
    open_shard,
    prefetch_shard,
    register_backend,
    resolve_target,
)
from cloudwds.storage import registry as registry_module
from cloudwds.storage.registry import AISBackend, LocalBackend, StorageBackend
from cloudwds.storage.streaming import open_http_stream, open_s3_stream
from cloudwds.urls import Rewrite


@dataclass(frozen=True)
class CountingRewrite(Rewrite):
    """A real rewrite rule that records every URL it is applied to."""

    calls: list[str] = field(default_factory=list, compare=False)

    def apply(self, url: str) -> str | None:
        self.calls.append(url)
        return super().apply(url)


def make_tar(samples: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, payload in samples:
            info = tarfile.TarInfo(f"{key}.txt")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture
def memory_shards() -> Iterator[list[str]]:
    """Three shards of two samples in fsspec's memory filesystem; removed afterwards."""
    fs = fsspec.filesystem("memory")
    base = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    urls = []
    for k in range(3):
        url = f"{base}/shard-{k}.tar"
        fs.pipe(url, make_tar([(f"s{k}-{j}", f"{k}.{j}".encode()) for j in range(2)]))
        urls.append(url)
    yield urls
    fs.rm(base, recursive=True)


@pytest.fixture
def scratch_schemes() -> Iterator[list[str]]:
    """Schemes a test registers; taken out of the registry again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry_module._REGISTRY.pop(name, None)


def test_builtin_schemes_and_their_streaming_openers() -> None:
    schemes = known_schemes()
    for scheme in ("-", "", "file", "pipe", "ais", "s3", "gs", "gcs", "az", "abfss", "http"):
        assert scheme in schemes
    assert schemes == sorted(schemes)
    # the streaming choice is part of the registry entry, not a class-name lookup
    assert get_backend("s3").streaming is open_s3_stream
    assert get_backend("https").streaming is open_http_stream
    assert get_backend("ais").streaming is open_http_stream
    assert get_backend("gs").streaming is None
    assert get_backend("az").streaming is None
    assert isinstance(get_backend("file"), LocalBackend)
    assert get_backend("file").remote is False
    # unknown schemes fall back to plain fsspec (memory://, hf://...)
    fallback = get_backend("memory")
    assert type(fallback) is FsspecBackend and fallback.remote and fallback.streaming is None


def test_register_refuses_a_taken_scheme_unless_clobber(scratch_schemes: list[str]) -> None:
    with pytest.raises(ValueError, match="'s3' is already registered"):
        register_backend("s3", FsspecBackend())
    scratch_schemes.append("plug")
    first, second = FsspecBackend(), FsspecBackend()
    register_backend("plug", first)
    assert get_backend("plug") is first and "plug" in known_schemes()
    with pytest.raises(ValueError, match="'plug'"):
        register_backend("plug", second)
    register_backend("plug://", second, clobber=True)  # "plug://" and "plug" are one scheme
    assert get_backend("plug") is second
    with pytest.raises(TypeError, match="StorageBackend"):
        register_backend("other", object())  # type: ignore[arg-type]
    assert wds.register_backend is register_backend


class MirrorBackend(LocalBackend):
    """``mirror://name`` reads ``<root>/name``: a wrapper scheme over local files."""

    def __init__(self, root: str):
        self.root = root

    def locate(self, url: str, config: StorageConfig) -> tuple[str, None]:
        del config
        return f"{self.root}/{url.split('://', 1)[1]}", None


def test_a_registered_wrapper_scheme_reads_and_writes_datasets(
    tmp_path, scratch_schemes: list[str]
) -> None:
    scratch_schemes.append("mirror")
    register_backend("mirror", MirrorBackend(str(tmp_path)))
    config = StorageConfig()
    sink = open_output("mirror://out.tar", config)
    sink.write(make_tar([("a", b"alpha"), ("b", b"beta")]))
    sink.commit()
    assert (tmp_path / "out.tar").is_file()
    assert not is_remote("mirror://out.tar", config)
    ds = wds.DataPipeline(
        wds.SimpleShardList(["mirror://out.tar"], storage=config), wds.tarfile_to_samples()
    )
    got = [(s["__key__"], s["txt"], s["__url__"]) for s in ds]
    assert got == [("a", b"alpha", "mirror://out.tar"), ("b", b"beta", "mirror://out.tar")]


def test_fsspec_fallback_reads_memory_shards_through_the_cache(
    memory_shards: list[str], tmp_path
) -> None:
    config = StorageConfig(cache=ShardCache(tmp_path / "cache"))
    ds = wds.DataPipeline(
        wds.SimpleShardList(memory_shards, storage=config), wds.tarfile_to_samples()
    )
    keys = [s["__key__"] for s in ds]
    assert keys == ["s0-0", "s0-1", "s1-0", "s1-1", "s2-0", "s2-1"]
    config.cache.wait(30)
    assert config.cache.contains(memory_shards[0])  # keyed by the original URL
    config.cache.close()


def test_each_url_is_resolved_once_per_open(memory_shards: list[str], tmp_path) -> None:
    rule = CountingRewrite(r"^virtual://", "memory://")
    cache = ShardCache(tmp_path / "cache")
    config = StorageConfig(rewrites=(rule,), cache=cache, prefetch=2)
    url = memory_shards[0].replace("memory://", "virtual://")
    # what the tar source does for one remote shard: is it remote? prefetch it, open it
    assert is_remote(url, config)
    prefetch_shard(url, config)
    with open_shard(url, config) as opened:
        assert opened.url == url
        data = opened.stream.read()
    assert data[:5] == b"s0-0."
    assert rule.calls == [url]
    cache.wait(30)
    cache.close()


def test_a_whole_pipeline_applies_rewrites_once_per_shard(
    memory_shards: list[str], tmp_path
) -> None:
    rule = CountingRewrite(r"^virtual://", "memory://")
    config = StorageConfig(rewrites=(rule,), cache=ShardCache(tmp_path / "cache"), prefetch=2)
    urls = [u.replace("memory://", "virtual://") for u in memory_shards]
    ds = wds.DataPipeline(wds.SimpleShardList(urls, storage=config), wds.tarfile_to_samples())
    for _ in range(2):  # two epochs: the second resolves nothing again
        assert len(list(ds)) == 6
    assert sorted(rule.calls) == sorted(urls)
    config.cache.wait(30)
    config.cache.close()


def test_targets_pickle_empty_and_follow_replaced_settings(memory_shards: list[str]) -> None:
    rule = CountingRewrite(r"^virtual://", "memory://")
    config = StorageConfig(rewrites=(rule,))
    url = memory_shards[1].replace("memory://", "virtual://")
    target = resolve_target(url, config)
    assert isinstance(target, Target)
    assert (target.url, target.rewritten, target.scheme) == (url, memory_shards[1], "memory")
    assert target.where == f"{url} (rewritten to {memory_shards[1]})"
    assert resolve_target(url, config) is target and resolve_target(target, config) is target
    assert len(config.targets) == 1
    assert len(pickle.loads(pickle.dumps(config)).targets) == 0
    # new rules: resolved again under them
    config.rewrites = (Rewrite(r"^virtual://", "file://"),)
    again = resolve_target(url, config)
    assert again.scheme == "file" and again.local_path == url.split("://", 1)[1]
    assert replace(config).targets is not config.targets


def test_resolve_target_keeps_the_pipe_rewrite_check() -> None:
    config = StorageConfig(rewrites=(Rewrite(r"^s3://(.*)$", r"pipe:aws s3 cp s3://\1 -"),))
    with pytest.raises(UnsafeInputError):
        resolve_target("s3://b/x.tar; rm -rf ~", config)
    assert not is_remote("s3://b/x.tar; rm -rf ~", config)
    ok = resolve_target("s3://b/x.tar", config)
    assert ok.scheme == "pipe" and ok.location == "aws s3 cp s3://b/x.tar -" and not ok.remote


def test_ais_routing_reads_through_the_gateway_and_writes_to_the_cloud() -> None:
    config = StorageConfig(ais_endpoint="http://gw:51080", use_ais_for=frozenset({"gs", "gcs"}))
    routed = resolve_target("gs://b/x.tar", config)
    assert isinstance(routed.backend, AISBackend) and routed.backend.routed
    assert routed.location == "http://gw:51080/v1/objects/b/x.tar?provider=gcp"
    assert routed.options is None  # the user's cloud options are not sent to the gateway
    assert resolve_target("s3://b/x.tar", config).backend is get_backend("s3")
    with pytest.raises(StorageError, match="AIS_ENDPOINT"):
        resolve_target("ais://b/x.tar", StorageConfig())
    assert is_remote("ais://b/x.tar", StorageConfig())  # remote; opening it says why it fails
    with pytest.raises(StorageError, match="AIS_ENDPOINT"):
        open_shard("ais://b/x.tar", StorageConfig())


def test_a_custom_remote_backend_is_cached_under_its_own_url(
    memory_shards: list[str], tmp_path, scratch_schemes: list[str]
) -> None:
    class Aliased(FsspecBackend):
        """``alias://x`` is the memory object ``memory://x``."""

        def locate(self, url: str, config: StorageConfig) -> tuple[str, None]:
            del config
            return "memory://" + url.split("://", 1)[1], None

    scratch_schemes.append("alias")
    register_backend("alias", Aliased())
    url = memory_shards[2].replace("memory://", "alias://")
    cache = ShardCache(tmp_path / "cache")
    config = StorageConfig(cache=cache)
    with open_shard(url, config) as opened:
        assert opened.stream.read()[:5] == b"s2-0."
    cache.wait(30)
    assert cache.contains(url) and not cache.contains(memory_shards[2])
    cache.close()


def test_object_identities_local_and_listed(memory_shards: list[str], tmp_path) -> None:
    local = tmp_path / "a.tar"
    local.write_bytes(b"x" * 10)
    missing = memory_shards[0].replace("shard-0", "nope")
    urls = [str(local), *memory_shards, missing, "pipe:cat a.tar"]
    ids = object_identities(urls, StorageConfig())
    assert ids[0]["url"] == str(local) and ids[0]["size"] == 10 and "mtime_ns" in ids[0]
    sizes = [len(fsspec.filesystem("memory").cat(u)) for u in memory_shards]
    assert [i["size"] for i in ids[1:4]] == sizes
    assert [i["url"] for i in ids[1:4]] == memory_shards
    assert ids[4] == {"url": missing} and ids[5] == {"url": "pipe:cat a.tar"}


def test_storage_backend_defaults_are_explicit() -> None:
    base = StorageBackend()
    target = Target("x://y", "x://y", "x", base, "x://y")
    with pytest.raises(NotImplementedError):
        base.open_reader(target, StorageConfig())
    with pytest.raises(StorageError, match="cannot write"):
        base.open_sink(target, StorageConfig())


def test_back_ends_know_sizes(memory_shards: list[str], tmp_path) -> None:
    config = StorageConfig()
    local = tmp_path / "b.tar"
    local.write_bytes(b"y" * 7)
    for url, size in [
        (str(local), 7),
        (f"file:{local}", 7),
        (memory_shards[0], len(fsspec.filesystem("memory").cat(memory_shards[0]))),
        ("pipe:cat b.tar", None),
        ("-", None),
    ]:
        target = resolve_target(url, config)
        assert target.backend.size(target, config) == size, url
    gone = resolve_target(memory_shards[0].replace("shard-0", "gone"), config)
    with pytest.raises(FileNotFoundError):  # ShardNotFoundError, after no retry
        gone.backend.size(gone, config)
