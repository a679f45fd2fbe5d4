"""Routing object-store URLs through an AIStore cluster's REST API.

With ``AIS_ENDPOINT=http://host:port`` and ``USE_AIS_FOR=gs:s3``, ``gs://b/o`` is read as
``GET http://host:port/v1/objects/b/o?provider=gcp`` (AIStore fetches and caches it from the
cloud); ``ais://b/o`` URLs always go to the endpoint with ``provider=ais``. The request is an
ordinary HTTP GET with ``Range``, so the same resilient block reader serves it in-process.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

PROVIDERS = {
    "ais": "ais",
    "gs": "gcp",
    "gcs": "gcp",
    "s3": "aws",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def parse_use_ais_for(value: str | Iterable[str] | None) -> frozenset[str]:
    """``"gs:s3"`` (colon- or comma-separated schemes) → ``{"gs", "s3"}``; ``gcs`` implies ``gs``."""
    if not value:
        return frozenset()
    items = value.replace(",", ":").split(":") if isinstance(value, str) else list(value)
    schemes = {s.strip().lower().removesuffix("://") for s in items if s.strip()}
    if "gcs" in schemes or "gs" in schemes:
        schemes |= {"gs", "gcs"}
    unknown = schemes - set(PROVIDERS)
    if unknown:
        raise ValueError(f"USE_AIS_FOR names schemes AIStore cannot serve: {sorted(unknown)}")
    return frozenset(schemes)


def ais_object_url(url: str, endpoint: str) -> str:
    """The AIStore REST URL that serves ``url`` (``scheme://bucket/object``)."""
    scheme, _, rest = url.partition("://")
    bucket, _, obj = rest.partition("/")
    if not bucket or not obj:
        raise ValueError(f"cannot route {url!r} through AIStore: expected scheme://bucket/object")
    provider = PROVIDERS[scheme.lower()]
    return f"{endpoint.rstrip('/')}/v1/objects/{quote(bucket)}/{quote(obj)}?provider={provider}"
