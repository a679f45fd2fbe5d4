"""Bring the ``TODO:`` entries of known_differences.txt in line with the latest suite run.

``python -m integration.webdataset_suite.update_known`` after running
``integration/test_webdataset_suite.py``: entries whose reason does not start with ``TODO:`` (the
reviewed, deliberate ones) are kept as they are; ``TODO:`` entries whose test now passes are
dropped, those still failing keep their (hand-written) cause, and tests that newly fail are added
as ``TODO:`` with their first error line. Meant for keeping CI honest while fixes land: every
``TODO:`` entry is a bug to fix, not a difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
KNOWN = SUITE_DIR / "known_differences.txt"


def _report_path() -> Path:
    base = os.environ.get("CLOUDWDS_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cloudwds-test"
    )
    return Path(base) / "webdataset-suite-cloudwds.json"


def _cause(error: str) -> str:
    first = error.split(" | ")[0]
    for prefix in ("call: ", "setup: ", "teardown: ", "collection: "):
        first = first.removeprefix(prefix)
    return " ".join(first.split())[:160] or "fails"


def main() -> None:
    report = json.loads(_report_path().read_text())
    header: list[str] = []
    kept: list[str] = []  # TODO entries
    reviewed: dict[str, str] = {}  # deliberate entries, kept verbatim
    for raw in KNOWN.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            if not kept and not reviewed:
                header.append(raw)
            continue
        test_id, _, reason = line.partition(" -- ")
        if reason.startswith("TODO:"):
            kept.append(line)
        else:
            reviewed[test_id] = line
    failing = {t for t, outcome in report["outcomes"].items() if outcome != "passed"}
    kept = [line for line in kept if line.partition(" -- ")[0] in failing]
    listed = {line.partition(" -- ")[0] for line in kept} | set(reviewed)
    todo = [
        f"{test_id} -- TODO: {_cause(report['errors'].get(test_id, ''))}"
        for test_id in sorted(failing - listed)
    ]
    entries = sorted([*reviewed.values(), *kept, *todo])
    KNOWN.write_text("\n".join([*header, *entries]) + "\n")
    print(f"{len(reviewed)} reviewed entries, {len(kept)} TODO kept, {len(todo)} TODO added")


if __name__ == "__main__":
    main()
