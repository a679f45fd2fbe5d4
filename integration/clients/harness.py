"""Run a client script on webdataset 0.2.86 or on cloudwds (through the opt-in) and load its batches.

The reference run is ``python run_X.py CONFIG`` with 0.2.86 first on ``PYTHONPATH``; the cloudwds
run is ``python -m cloudwds.run run_X.py CONFIG``, the launcher that makes ``import webdataset``
resolve to cloudwds in the script and in its DataLoader workers (or, side ``cloudwds-call``, the
script calls ``cloudwds.install_as_webdataset()`` before importing the client). Same interpreter, same client
code, same shards: only the library behind ``import webdataset`` differs.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .env import ClientEnv

HERE = Path(__file__).parent
Side = Literal["reference", "cloudwds", "cloudwds-call"]


@dataclass
class Run:
    """The batches one run produced, field by field, plus its JSON report."""

    batches: list[dict[str, np.ndarray]]
    report: dict[str, Any]
    seconds: float

    def field(self, name: str) -> list[np.ndarray]:
        return [b[name] for b in self.batches]


class ClientRunError(AssertionError):
    """The client script failed; carries the tail of its stderr (the client's traceback)."""


def run_client(
    env: ClientEnv, script: str, config: dict[str, Any], side: Side, workdir: Path
) -> Run:
    """Run ``integration/clients/<script>`` with ``config`` on one side; return what it yielded."""
    import time

    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{Path(script).stem}-{side}.npz"
    cfg_path = workdir / f"{Path(script).stem}-{side}.json.in"
    path = str(HERE / script)
    if side == "reference":
        cmd, environ = [str(env.python), path, str(cfg_path)], env.reference_env()
    elif side == "cloudwds-call":  # the script calls cloudwds.install_as_webdataset() itself
        config = {**config, "install_as_webdataset": True}
        cmd, environ = [str(env.python), path, str(cfg_path)], env.cloudwds_env()
    else:
        cmd, environ = (
            [str(env.python), "-m", "cloudwds.run", path, str(cfg_path)],
            env.cloudwds_env(),
        )
    cfg_path.write_text(json.dumps({**config, "out": str(out)}))
    start = time.monotonic()
    proc = subprocess.run(
        cmd, env=environ, cwd=workdir, capture_output=True, text=True, timeout=240
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise ClientRunError(
            f"{side} run of {script} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
        )
    report = json.loads(out.with_suffix(".json").read_text())
    with np.load(out) as npz:
        fields = sorted({k.rstrip("0123456789") for k in npz.files})
        batches = [{f: npz[f"{f}{i}"] for f in fields} for i in range(report["batches"])]
    return Run(batches=batches, report=report, seconds=seconds)


def sample_rows(run: Run, *fields: str) -> list[tuple[bytes, ...]]:
    """Every sample of every batch as a tuple of its fields' bytes (for multiset comparisons)."""
    rows = []
    for b in run.batches:
        for i in range(len(b[fields[0]])):
            rows.append(tuple(np.ascontiguousarray(b[f][i]).tobytes() for f in fields))
    return rows
