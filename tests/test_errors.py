"""cloudwds.errors: typed errors carry the URL and member in their message."""

from __future__ import annotations

import pickle

import pytest

from cloudwds import errors


def test_shard_error_messages():
    assert str(errors.ShardError("bad")) == "bad"
    assert str(errors.ShardError("bad", "u.tar")) == "bad (url='u.tar')"
    assert (
        str(errors.TarFormatError("bad", "u.tar", "k.jpg")) == "bad (url='u.tar', member='k.jpg')"
    )
    exn = errors.TruncatedShardError("cut", "u.tar", "k.jpg")
    assert (exn.message, exn.url, exn.member) == ("cut", "u.tar", "k.jpg")
    assert isinstance(exn, errors.CloudWdsError)


def test_missing_key_error_is_a_key_error_with_a_readable_message():
    exn = errors.MissingKeyError("no jpg", "u.tar", "k")
    assert str(exn) == "no jpg (url='u.tar', member='k')"
    with pytest.raises(KeyError):
        raise exn


def test_storage_errors():
    assert (
        str(errors.StorageError("cannot open", "s3://b/x.tar"))
        == "cannot open (url='s3://b/x.tar')"
    )
    assert str(errors.PipeError("status 3")) == "status 3"
    assert issubclass(errors.PipeError, errors.StorageError)


def test_errors_pickle_across_processes():
    # DataLoader workers send exceptions to the main process by pickling them
    for exn in (
        errors.TruncatedShardError("cut", "u.tar", "k.jpg"),
        errors.MissingKeyError("no jpg", "u.tar", "k"),
        errors.PipeError("status 3", "pipe:false"),
    ):
        copy = pickle.loads(pickle.dumps(exn))
        assert type(copy) is type(exn) and str(copy) == str(exn)
