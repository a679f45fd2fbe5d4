"""The CLI's one-line error report names the URL whenever one is known."""

from __future__ import annotations

import errno

from cloudwds.cli import main
from cloudwds.commands._common import error_message, naming_url, per_shard
from cloudwds.errors import ShardError, ShardNotFoundError, StorageError

URL = "s3://bucket/shard-000.tar"


def test_error_message_appends_a_url_found_in_the_cause_chain() -> None:
    inner = StorageError("read failed", URL)
    outer = RuntimeError("worker died")
    outer.__cause__ = inner
    assert error_message(outer) == f"RuntimeError: worker died (url={URL!r})"
    assert error_message(inner) == f"read failed (url={URL!r})"  # named once, not twice
    assert error_message(OSError(errno.ENOSPC, "No space left on device")) == (
        "[Errno 28] No space left on device"  # no URL known anywhere: nothing invented
    )


def test_naming_url_wraps_errors_that_do_not_name_it() -> None:
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    named = naming_url(disk_full, URL)
    assert isinstance(named, StorageError) and named.url == URL and named.__cause__ is disk_full
    assert str(named) == f"OSError: [Errno 28] No space left on device (url={URL!r})"
    bare = ShardError("bad header")
    assert naming_url(bare, URL) is bare and bare.url == URL
    already = ShardNotFoundError("no such object", URL)
    assert naming_url(already, URL) is already


def test_per_shard_errors_name_their_shard() -> None:
    def fail(url: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    [(url, result, error)] = list(per_shard([URL], fail, workers=1))
    assert (url, result) == (URL, None) and error is not None and URL in str(error)


def test_cli_error_line_names_the_missing_shard(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing-000.tar")
    assert main(["head", missing]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cloudwds head: error: ") and repr(missing) in line
