"""Our stand-in for webdataset's ``tests/conftest.py``, which its sdist does not ship.

The harness copies this file to ``<unpacked sdist>/tests/conftest.py``. webdataset's tests import
these names from ``tests.conftest``: a counting helper, the paths of the local test data (made by
``testdata.py``) and the remote locations (used only by the tests deselected as needing the
internet). The test markers it uses are registered so ``-m quick`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

local_data = "testdata/imagenet-000000.tgz"
compressed = "testdata/compressed.tar"
remote_loc = "http://storage.googleapis.com/webdataset/openimages/"
remote_shards = "openimages-train-0000{00..99}.tar"
remote_shard = "openimages-train-000321.tar"
remote_pattern = "openimages-train-{}.tar"
remote_sample = "http://storage.googleapis.com/webdataset/testdata/sample.tgz"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "quick: a quick test")
    config.addinivalue_line("markers", "notorch: a test that does not need torch")


def count_samples_tuple(
    source: Iterable[Any], *checks: Callable[[Any], bool], n: int = 10000
) -> int:
    """Count up to ``n`` samples of ``source``; each must be a tuple, dict or list and pass ``checks``."""
    count = 0
    for sample in source:
        if count >= n:
            break
        assert isinstance(sample, (tuple, dict, list)), (type(sample), sample)
        for check in checks:
            assert check(sample)
        count += 1
    return count
