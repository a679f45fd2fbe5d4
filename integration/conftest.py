"""Session fixtures: real storage servers on 127.0.0.1, started lazily, stopped at session end.

Fixtures (each server sits behind a counting/fault-injecting proxy, see servers.Endpoint):
``s3_server``, ``gcs_server``, ``azure_server``, ``http_server``, ``ais_gateway``, and
``fault_proxy`` (factory for an extra proxy, closed after the test). Before every test, the
servers already started get their counters and faults cleared (and are restarted if a test
stopped one); data is kept, so use ``server.new_bucket()`` for isolation.

To prove reads come from a cache: ``with server.offline(): ...`` (connection refused, objects
kept), or ``server.stop()`` (in-memory servers lose their objects; restarted for the next test).

A server that cannot start fails the test with the reason; nothing is skipped.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

# --- test-environment setup, before anything imports gcsfs/botocore/fsspec --------------------
# gcsfs >= 2026.10 defaults to a gRPC bucket-type probe that the HTTP emulator cannot answer:
# ~43 s of retries per operation. Read once, when gcsfs is imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# Dummy credentials, so no SDK walks its credential chain to a metadata server off loopback.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,  # a developer's ~/.aws must not change endpoints/regions
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "NO_GCE_CHECK": "true",  # google-auth: skip the GCE metadata probe (must be lowercase)
        "GCE_METADATA_HOST": "127.0.0.1:9",  # ...and if anything probes anyway, stay on loopback
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
)
for _var in (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING",
    "FSSPEC_S3",
    "FSSPEC_GS",
    "FSSPEC_AZ",
):
    os.environ.pop(_var, None)  # tests pass endpoints explicitly (or via server.env)
logging.getLogger("werkzeug").setLevel(logging.ERROR)

import pytest  # noqa: E402

from .ais_gateway import AISGateway  # noqa: E402
from .fault_proxy import FaultProxy  # noqa: E402
from .servers import (  # noqa: E402
    AzureEndpoint,
    Endpoint,
    GCSEndpoint,
    HTTPEndpoint,
    S3Endpoint,
)

E = TypeVar("E", bound=Endpoint)
_started: list[Endpoint] = []
_gateways: list[AISGateway] = []


def _serve(factory: Callable[[], E], what: str) -> Iterator[E]:
    """Start one endpoint for the session; a start failure fails (never skips) the test."""
    try:
        ep = factory()
        ep.start()
    except Exception as e:  # noqa: BLE001 - turned into a readable test failure
        pytest.fail(f"could not start {what}: {type(e).__name__}: {e}", pytrace=False)
    _started.append(ep)
    try:
        yield ep
    finally:
        _started.remove(ep)
        ep.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """moto S3 (``s3://``)."""
    yield from _serve(S3Endpoint, "moto S3 server (python -m moto.server)")


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSEndpoint]:
    """gcp-storage-emulator (``gs://``)."""
    gcsfs = sys.modules.get("gcsfs")
    if gcsfs is not None and gcsfs.GCSFileSystem.__module__ != "gcsfs.core":
        pytest.fail(
            "gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set; "
            "every GCS call would stall ~43 s",
            pytrace=False,
        )
    yield from _serve(GCSEndpoint, "gcp-storage-emulator")


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureEndpoint]:
    """Azurite blob (``az://``); install it with scripts/install-emulators.sh."""
    yield from _serve(AzureEndpoint, "Azurite blob service")


@pytest.fixture(scope="session")
def http_server() -> Iterator[HTTPEndpoint]:
    """Range-capable static HTTP server over ``http_server.root`` (``http://``)."""
    yield from _serve(HTTPEndpoint, "range HTTP server")


@pytest.fixture(scope="session")
def ais_gateway(s3_server: S3Endpoint, gcs_server: GCSEndpoint) -> Iterator[AISGateway]:
    """AIStore object API: provider=aws -> s3_server, gcp -> gcs_server, ais -> local dir."""
    try:
        gw = AISGateway({"aws": s3_server.new_fs(), "gcp": gcs_server.new_fs()}).start()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"could not start AIS gateway: {type(e).__name__}: {e}", pytrace=False)
    _gateways.append(gw)
    try:
        yield gw
    finally:
        _gateways.remove(gw)
        gw.close()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Per test: clear counters/faults of already-running servers; restart stopped ones."""
    for ep in list(_started):
        if not ep.running:
            ep.stop()
            ep.start()
        ep.reset_counts()
    for gw in _gateways:
        gw.reset_counts()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[Any], FaultProxy]]:
    """Factory: ``fault_proxy(target)`` -> a started FaultProxy in front of ``target``.

    ``target`` is a port, a ``http://127.0.0.1:PORT`` URL, or anything with ``.endpoint``
    (chaining in front of a server's own proxy keeps its counters working).
    """
    made: list[FaultProxy] = []

    def make(target: Any) -> FaultProxy:
        url = getattr(target, "endpoint", target)
        port = url if isinstance(url, int) else int(str(url).rstrip("/").rsplit(":", 1)[1])
        proxy = FaultProxy(port).start()
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        p.stop()


_CACHE_HOMES = itertools.count()


@pytest.fixture(scope="session")
def _xdg_cache_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(autouse=True)
def _private_user_cache(_xdg_cache_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote shards are cached by default (cloudwds.cache.defaults) under ``XDG_CACHE_HOME``:
    point it at a fresh directory per test (created only if a test reads a remote shard), so no
    test writes into the real ``~/.cache`` and no test is served another test's shards."""
    path = os.path.join(_xdg_cache_base, str(next(_CACHE_HOMES)))
    monkeypatch.setenv("XDG_CACHE_HOME", path)
