"""pytest plugin (loaded with ``-p``) that writes each test's outcome as JSON lines.

The harness reads the file named by ``CLOUDWDS_SUITE_RESULTS`` instead of parsing pytest's
console output. One line per reported phase (setup/call/teardown) and per failed collection.
"""

from __future__ import annotations

import json
import os
from typing import Any


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get("CLOUDWDS_SUITE_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _summary(report: Any) -> str:
    """The ``E ...`` lines of a failure (or its last line): enough to group failures by cause."""
    text = (getattr(report, "longreprtext", "") or "").strip()
    errors = [line for line in text.splitlines() if line.startswith("E ")]
    if errors:
        return " | ".join(" ".join(e[1:].split()) for e in errors[:3])[:600]
    lines = text.splitlines()
    return lines[-1][:600] if lines else ""


def pytest_runtest_logreport(report: Any) -> None:
    _write(
        {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "error": _summary(report) if report.failed else "",
        }
    )


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _write(
            {
                "nodeid": report.nodeid,
                "when": "collect",
                "outcome": "failed",
                "error": _summary(report),
            }
        )
