"""The one retry policy (``classify_error``): what fails fast, what is retried, and the types raised."""

from __future__ import annotations

import aiohttp
import botocore.exceptions
import pytest

from cloudwds.errors import ShardNotFoundError, StorageAccessError, StorageError
from cloudwds.stats import COUNTERS
from cloudwds.storage.remote import RetryPolicy, classify_error, permanent_error
from cloudwds.storage.streaming import HTTPStatusError, _http_error


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "GetObject")  # type: ignore[arg-type]


def response_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    "exn, kind",
    [
        (FileNotFoundError("s3://b/missing.tar"), "missing"),
        (client_error("NoSuchKey", 404), "missing"),
        (client_error("NoSuchBucket", 404), "missing"),
        (wrapped(FileNotFoundError("no bucket"), client_error("NoSuchBucket", 404)), "missing"),
        (_http_error(404, "/x.tar"), "missing"),
        (wrapped(FileNotFoundError("http://h/x"), response_error(404)), "missing"),
        (PermissionError("Access Denied"), "denied"),
        (client_error("AccessDenied", 403), "denied"),
        (client_error("InvalidAccessKeyId", 403), "denied"),
        (botocore.exceptions.NoCredentialsError(), "denied"),
        (_http_error(403, "/x.tar"), "denied"),
        (_http_error(401, "/x.tar"), "denied"),
        (OSError("Forbidden: b/x.tar\nno access"), "denied"),  # how gcsfs reports a 403
        (HTTPStatusError(400, "HTTP 400"), "permanent"),
        (TypeError("unexpected keyword 'anon'"), "permanent"),
        (IsADirectoryError("a directory"), "permanent"),
        # transient: everything that may pass
        (ConnectionRefusedError(111, "Connection refused"), "transient"),
        (TimeoutError("read timed out"), "transient"),
        (client_error("SlowDown", 503), "transient"),
        (client_error("InternalError", 500), "transient"),
        (_http_error(503, "/x.tar"), "transient"),
        (_http_error(429, "/x.tar"), "transient"),
        (OSError("connection ended at byte 5 of 10"), "transient"),
        # fsspec HTTP reports every failed size lookup as FileNotFoundError: look at the cause
        (wrapped(FileNotFoundError("http://h/x"), ConnectionRefusedError()), "transient"),
        (wrapped(FileNotFoundError("http://h/x"), response_error(503)), "transient"),
        (wrapped(FileNotFoundError("http://h/x"), aiohttp.ServerDisconnectedError()), "transient"),
    ],
)
def test_classification(exn: BaseException, kind: str) -> None:
    assert classify_error(exn) == kind


def test_permanent_errors_get_their_type_and_name_the_url() -> None:
    url = "s3://bucket/x.tar"
    missing = permanent_error("stat", url, client_error("NoSuchKey", 404))
    denied = permanent_error("stat", url, botocore.exceptions.NoCredentialsError())
    other = permanent_error("stat", url, HTTPStatusError(400, "HTTP 400 for x"))
    assert type(missing) is ShardNotFoundError and isinstance(missing, FileNotFoundError)
    assert type(denied) is StorageAccessError and isinstance(denied, PermissionError)
    assert type(other) is StorageError
    assert all(e is not None and e.url == url and url in str(e) for e in (missing, denied, other))
    assert permanent_error("stat", url, ConnectionResetError()) is None


class Attempts:
    def __init__(self, errors: list[BaseException], result: str = "ok"):
        self.errors, self.result, self.calls = list(errors), result, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def test_retry_policy_fails_fast_on_permanent_errors() -> None:
    policy = RetryPolicy(retries=5, backoff=0.0)
    for exn, cls in [
        (client_error("NoSuchBucket", 404), ShardNotFoundError),
        (botocore.exceptions.NoCredentialsError(), StorageAccessError),
        (_http_error(403, "/x"), StorageAccessError),
    ]:
        attempts = Attempts([exn] * 6)
        before = COUNTERS.snapshot().get("retries", 0)
        with pytest.raises(cls) as info:
            policy.run("stat", "s3://b/x.tar", attempts)
        assert attempts.calls == 1  # no retry
        assert COUNTERS.snapshot().get("retries", 0) == before
        assert info.value.url == "s3://b/x.tar"


def test_retry_policy_retries_transient_errors() -> None:
    policy = RetryPolicy(retries=3, backoff=0.0)
    attempts = Attempts([ConnectionRefusedError(), client_error("SlowDown", 503)])
    assert policy.run("stat", "s3://b/x.tar", attempts) == "ok"
    assert attempts.calls == 3
    attempts = Attempts([ConnectionRefusedError()] * 4)
    with pytest.raises(StorageError, match="after 3 retries") as info:
        policy.run("stat", "s3://b/x.tar", attempts)
    assert attempts.calls == 4 and not isinstance(info.value, FileNotFoundError)
