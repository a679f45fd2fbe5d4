"""cloudwds.storage.opening: back ends are imported when the dataset is built (issue 12 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import cloudwds as wds
before = "s3fs" in sys.modules
ds = wds.WebDataset("s3://bucket/x-{000..001}.tar", shardshuffle=False, cache_dir=sys.argv[1])
caches = [type(s.storage.cache).__name__ for s in ds.pipeline if hasattr(s, "storage")]
print(json.dumps({"before": before, "after": "s3fs" in sys.modules, "caches": caches}))
"""


def test_building_an_s3_dataset_imports_s3fs_and_builds_the_cache(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] is False
    assert got["after"] is True
    assert "ShardCache" in got["caches"]
