"""The benchmark's fresh-process machinery (bench.cases.run_fresh) and its generated programs.

No speed is asserted here: these check that the programs the suite times are valid Python, do
the work they claim (sample counts on real local shards) and that the timing lines are parsed.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bench import others
from bench.cases import FRESH_HEAD, FRESH_TAIL, fresh_env, fresh_script, run_fresh


def _shard(path: str, n: int) -> str:
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            for ext, data in (("txt", f"sample {i}".encode()), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_run_fresh_reads_the_count_and_times_from_the_process_start(tmp_path: Path) -> None:
    out = run_fresh(FRESH_HEAD + "n = 7\n" + FRESH_TAIL, fresh_env(str(tmp_path / "work")))
    assert out["count"] == 7
    assert out["seconds"] > 0
    assert out["cpu_seconds"] >= 0


def test_run_fresh_uses_the_programs_own_start_and_cpu_when_it_prints_them(tmp_path: Path) -> None:
    script = (
        "import time as _t, os as _os\n"
        "print('__start__', _t.monotonic(), 10.0, flush=True)\n"
        "print('__fresh__', _t.monotonic(), 4, 12.5, flush=True)\n"
        "_os._exit(0)\n"
    )
    out = run_fresh(script, fresh_env(str(tmp_path / "work")))
    assert out["count"] == 4
    assert out["cpu_seconds"] == pytest.approx(2.5)
    assert 0 <= out["seconds"] < 60


def test_run_fresh_reports_a_failing_program() -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_fresh(FRESH_HEAD + "n = 1 // 0\n" + FRESH_TAIL)


def test_fresh_env_caches_bytecode_outside_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = fresh_env(str(tmp_path / "work-quick"))
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")


def test_the_cloudwds_program_reads_every_sample_of_real_shards(tmp_path: Path) -> None:
    urls = [_shard(str(tmp_path / f"s{i}.tar"), 5 + i) for i in range(2)]
    script = fresh_script("cloudwds", urls, {}).replace(", storage_options={}", "")
    out = run_fresh(script, fresh_env(str(tmp_path / "work")))
    assert out["count"] == 11


def test_the_python_floor_program_does_nothing() -> None:
    assert run_fresh(fresh_script("python", [], {}))["count"] == 0


def test_fresh_script_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        fresh_script("tfrecord", [], {})


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"decode": True, "warmup": True},
        {"loader": True},
        {"imports_timed": True},
        {
            "storage_options": {
                "key": "k",
                "secret": "s",
                "endpoint_url": "http://127.0.0.1:9",
            }
        },
    ],
)
def test_litdata_programs_are_valid_python(kwargs: dict[str, Any]) -> None:
    script = others.litdata_script("/data/litdata", "/tmp/cache", **kwargs)
    compile(script, "<litdata>", "exec")
    assert ("__start__" in script) is not kwargs.get("imports_timed", False)
    assert ("allow_http" in script) is ("storage_options" in kwargs)
    assert ("StreamingDataLoader" in script) is kwargs.get("loader", False)


def test_litdata_dir_is_named_by_the_number_of_shards() -> None:
    paths = ["/b/data/full/jpeg/jpeg-000000.tar", "/b/data/full/jpeg/jpeg-000001.tar"]
    assert others.litdata_dir(paths) == os.path.join("/b/data/full", "litdata-jpeg-2")


def test_version_of_a_missing_package_is_a_dash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(others, "PYTHON", str(tmp_path / "no-python"))
    assert others.version("litdata") == "-"


def test_nothing_is_available_without_the_venv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(others, "PYTHON", str(tmp_path / "no-python"))
    monkeypatch.setattr(others, "_available", {})
    assert others.available("litdata") is False
    assert others.available("litdata", load=True) is False
