"""cloudwds: the public namespace mirrors webdataset's names used by the README."""

from __future__ import annotations

import cloudwds as wds

README_NAMES = [
    "DataPipeline",
    "Decoder",
    "ResampledShards",
    "ShardWriter",
    "SimpleShardList",
    "TarWriter",
    "WebDataset",
    "WebLoader",
    "batched",
    "cbors_to_samples",
    "decode",
    "handle_extension",
    "map_tuple",
    "shuffle",
    "split_by_worker",
    "tarfile_to_samples",
    "to_tuple",
    "torch_audio",
    "torch_video",
]


def test_all_is_sorted_and_complete():
    assert wds.__all__ == sorted(wds.__all__)
    assert all(hasattr(wds, name) for name in wds.__all__)
    assert set(README_NAMES) <= set(wds.__all__)


def test_import_does_not_import_webdataset():
    import subprocess
    import sys

    code = "import sys, cloudwds; print('webdataset' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
