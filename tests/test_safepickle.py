"""cloudwds.safepickle: the allow-list itself, below the policy of cloudwds.security."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from cloudwds.errors import UnsafeInputError
from cloudwds.safepickle import OPT_IN, _AllowListUnpickler, allowed_global


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "int"),
        ("builtins", "frozenset"),
        ("collections", "OrderedDict"),
        ("datetime", "datetime"),
        ("numpy", "ndarray"),
        ("numpy", "float32"),  # scalar types are found by what they are, not listed
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x name, mapped for numpy 2
        ("torch", "float16"),  # dtypes likewise
        ("__builtin__", "xrange"),  # Python 2 names in protocol 0-2 pickles
        ("copy_reg", "_reconstructor"),
    ],
)
def test_plain_data_globals_are_allowed(module, name):
    assert allowed_global(module, name)


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("numpy", "load"),  # a numpy function, not a scalar type
        ("numpy", "random"),  # a module
        ("torch", "load"),
        ("numpy", "float32.__init__"),  # dotted names never pass
        ("collections", "namedtuple"),
    ],
)
def test_everything_else_is_refused(module, name):
    assert not allowed_global(module, name)


def test_nested_data_round_trips():
    value = {
        "a": [1, 2.5, "x", b"\x00\xff", bytearray(b"ab")],
        "od": collections.OrderedDict(k=(1, 2)),
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
        "scalar": np.float32(1.5),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        got = _AllowListUnpickler(pickle.dumps(value, protocol), "u", "m").load()
        assert got["a"] == value["a"] and got["od"] == value["od"]
        assert np.array_equal(got["arr"], value["arr"]) and got["scalar"] == np.float32(1.5)


def test_a_refused_global_deep_inside_names_the_url_member_and_opt_in():
    payload = pickle.dumps({"ok": [1, {"deep": os.system}]})
    with pytest.raises(UnsafeInputError) as info:
        _AllowListUnpickler(payload, "s3://b/x.tar", "k.pyd").load()
    message = str(info.value)
    assert "posix.system" in message or "os.system" in message
    assert OPT_IN in message
    assert info.value.url == "s3://b/x.tar" and info.value.member == "k.pyd"
