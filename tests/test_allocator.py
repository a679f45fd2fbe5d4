"""cloudwds.allocator: WDS_MALLOPT is read at an explicit entry point, not per member."""

from __future__ import annotations

from cloudwds import allocator


def test_configure_reads_wds_mallopt_from_the_given_environment():
    saved = allocator._enabled
    try:
        assert allocator.configure_allocator({"WDS_MALLOPT": "0"}) is False
        assert allocator._enabled is False
        assert allocator.configure_allocator({"WDS_MALLOPT": "off"}) is False
        assert allocator.configure_allocator({}) is True
        assert allocator._enabled is True
    finally:
        allocator._enabled = saved


def test_building_a_tar_stage_configures_the_allocator(monkeypatch):
    import cloudwds as wds

    saved = allocator._enabled
    try:
        monkeypatch.setenv("WDS_MALLOPT", "0")
        wds.tarfile_to_samples()
        assert allocator._enabled is False
        monkeypatch.setenv("WDS_MALLOPT", "1")
        wds.tarfile_to_samples()
        assert allocator._enabled is True
    finally:
        allocator._enabled = saved
