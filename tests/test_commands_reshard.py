"""``cloudwds reshard --dask``: what is refused before any cluster starts (the Dask runs
themselves are in integration/test_offline.py, on one shared LocalCluster)."""

from __future__ import annotations

import pytest
from conftest import make_shards

from cloudwds.cli import main


@pytest.mark.parametrize("extra", [["--maxsize", "1M"], ["--maxcount", "4", "--shuffle"]])
def test_dask_refuses_cuts_that_depend_on_the_stream(capsys, tmp_path, extra):
    shards = make_shards(tmp_path, 2, 5)
    pattern = str(tmp_path / "out-%03d.tar")
    code = main(["reshard", shards.spec, "-o", pattern, *extra, "--dask", "tcp://127.0.0.1:1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--dask cuts by --maxcount only" in err
    assert not list(tmp_path.glob("out-*"))


def test_dask_value_that_is_a_shard_pattern_goes_back_to_the_urls(capsys, tmp_path):
    shards = make_shards(tmp_path, 2, 5)
    pattern = str(tmp_path / "out-%03d.tar")
    code = main(["reshard", "-o", pattern, "--maxsize", "1M", "--dask", shards.spec])
    assert code == 1  # parsed as: the shards, then --dask with a LocalCluster (refused here)
    assert "--dask cuts by --maxcount only" in capsys.readouterr().err
