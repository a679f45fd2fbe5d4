"""cloudwds.storage.retry: one policy object decides, for every loop, when to wait and when to stop."""

from __future__ import annotations

import pytest

from cloudwds.errors import ShardNotFoundError, StorageAccessError, StorageError
from cloudwds.stats import COUNTERS
from cloudwds.storage import RetryPolicy, StorageConfig
from cloudwds.storage import remote as remote_module
from cloudwds.storage.retry import RangeIgnoredError


def retries_counted() -> float:
    return COUNTERS.snapshot().get("retries", 0)


def test_after_failure_backs_off_then_gives_up_naming_the_url() -> None:
    policy = RetryPolicy(retries=2, backoff=0.5)
    before = retries_counted()
    assert policy.after_failure("read", "s3://b/x.tar", ConnectionResetError(), 1) == 0.5
    assert policy.after_failure("read", "s3://b/x.tar", TimeoutError(), 2) == 1.0
    with pytest.raises(StorageError, match="read failed after 2 retries: TimeoutError") as info:
        policy.after_failure("read", "s3://b/x.tar", TimeoutError("slow"), 3)
    assert info.value.url == "s3://b/x.tar"
    assert retries_counted() - before == 2  # the give-up is not a retry


@pytest.mark.parametrize(
    "exn, cls",
    [
        (FileNotFoundError("gone"), ShardNotFoundError),
        (PermissionError("no"), StorageAccessError),
        (RangeIgnoredError("whole object again"), StorageError),
        (TypeError("bad option"), StorageError),
    ],
)
def test_after_failure_raises_permanent_errors_at_once(
    exn: BaseException, cls: type[StorageError]
) -> None:
    before = retries_counted()
    with pytest.raises(cls) as info:
        RetryPolicy(retries=5).after_failure("stat", "gs://b/x.tar", exn, 1)
    assert type(info.value) is cls and info.value.__cause__ is exn
    assert retries_counted() == before


def test_run_stops_retrying_when_cancelled() -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionResetError("reset")

    with pytest.raises(StorageError, match="the reader was closed"):
        RetryPolicy(retries=5, backoff=0.0).run("read", "s3://b/x.tar", failing, lambda: True)
    assert len(calls) == 1


def test_one_policy_per_config_from_the_environment() -> None:
    config = StorageConfig.resolve(
        cache_dir=False, environ={"WDS_RETRIES": "7", "WDS_TIMEOUT": "2.5"}
    )
    assert (config.retry.retries, config.retry.timeout) == (7, 2.5)
    explicit = StorageConfig.resolve(cache_dir=False, retries=1, timeout=3, environ={})
    assert (explicit.retry.retries, explicit.retry.timeout) == (1, 3)
    # the old import path still names the same class
    assert remote_module.RetryPolicy is RetryPolicy
