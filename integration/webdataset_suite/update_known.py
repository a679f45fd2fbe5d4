"""Rewrite the ``TODO:`` entries of known_differences.txt from the latest suite run.

``python -m integration.webdataset_suite.update_known`` after running
``integration/test_webdataset_suite.py``: entries whose reason does not start with ``TODO:`` (the
reviewed, deliberate ones) are kept as they are; the ``TODO:`` entries are replaced by the tests
that failed in the last run and are not otherwise listed, each with its first error line. Meant
for keeping CI honest while fixes land: every ``TODO:`` entry is a bug to fix, not a difference.
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
    kept: list[str] = []
    for raw in KNOWN.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            if not kept:
                header.append(raw)
            continue
        test_id, _, reason = line.partition(" -- ")
        if not reason.startswith("TODO:"):
            kept.append(line)
    listed = {line.partition(" -- ")[0] for line in kept}
    todo = [
        f"{test_id} -- TODO: {_cause(report['errors'].get(test_id, ''))}"
        for test_id, outcome in sorted(report["outcomes"].items())
        if outcome != "passed" and test_id not in listed
    ]
    KNOWN.write_text("\n".join([*header, *kept, *todo]) + "\n")
    print(f"{len(kept)} reviewed entries kept, {len(todo)} TODO entries written")


if __name__ == "__main__":
    main()
