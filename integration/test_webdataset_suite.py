"""webdataset 1.0.2's own test suite, run against cloudwds through the ``import webdataset`` opt-in.

At test time the harness takes webdataset's source distribution from the package registry
(``pip download --no-binary :all:``, cached under ``~/.cache/cloudwds-test/``; its tests are never
copied into this repository), unpacks only its ``tests/``, adds what the sdist lacks (our
``tests/conftest.py`` stand-in and synthetic ``testdata/``, both in ``integration/webdataset_suite``)
and runs pytest on it in a subprocess:

- through ``python -m cloudwds.run -m pytest``, so every ``import webdataset`` in those tests gets
  cloudwds: every selected test must pass, except the ones listed, each with a one-line reason,
  in ``webdataset_suite/known_differences.txt`` (listed tests must exist and must still fail);
- with the real webdataset 1.0.2 (a pinned test dependency), which validates the stand-in conftest
  and test data: there, every selected test must pass.

Tests that need the internet are deselected (``webdataset_suite/needs_internet.txt``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from filelock import FileLock

from .webdataset_suite import testdata

VERSION = "1.0.2"
SUITE_DIR = Path(__file__).resolve().parent / "webdataset_suite"
KNOWN_DIFFERENCES = SUITE_DIR / "known_differences.txt"
NEEDS_INTERNET = SUITE_DIR / "needs_internet.txt"
PER_TEST_TIMEOUT = 60
RUN_TIMEOUT = 600


def _cache_dir() -> Path:
    base = os.environ.get("CLOUDWDS_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cloudwds-test"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sdist() -> Path:
    """webdataset's sdist from the registry, downloaded once and kept in the cache."""
    cache = _cache_dir()
    target = cache / f"webdataset-{VERSION}.tar.gz"
    with FileLock(str(cache / "webdataset-sdist.lock")):
        if not target.exists():
            download = cache / f"download-{os.getpid()}"
            download.mkdir(exist_ok=True)
            try:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--no-deps",
                        "--no-binary",
                        ":all:",
                        f"webdataset=={VERSION}",
                        "-d",
                        str(download),
                    ],
                    check=True,
                    timeout=300,
                )
                os.replace(download / target.name, target)
            finally:
                shutil.rmtree(download, ignore_errors=True)
    return target


def _read_list(path: Path) -> dict[str, str]:
    """``<test id> -- <reason>`` lines (``#`` comments and blank lines ignored) → {id: reason}."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition(" -- ")
        assert sep and reason.strip(), f"{path.name}:{number}: expected '<test id> -- <reason>'"
        assert test_id not in entries, f"{path.name}:{number}: {test_id} listed twice"
        entries[test_id.strip()] = reason.strip()
    return entries


def _prepare(workdir: Path) -> None:
    """Unpack the sdist's tests/ and add our conftest, test data and result plugin."""
    prefix = f"webdataset-{VERSION}/tests/"
    with tarfile.open(_sdist()) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        assert members, f"no tests/ in webdataset {VERSION}'s sdist"
        for member in members:
            member.name = "tests/" + member.name[len(prefix) :]
            tar.extract(member, workdir, filter="data")
    (workdir / "tests" / "__init__.py").write_text("")
    shutil.copy(SUITE_DIR / "suite_conftest.py", workdir / "tests" / "conftest.py")
    shutil.copy(SUITE_DIR / "results_plugin.py", workdir / "_cloudwds_suite_results.py")
    testdata.generate(str(workdir / "testdata"))


@dataclass
class SuiteRun:
    outcomes: dict[str, str] = field(default_factory=dict)  # test id → passed/failed/skipped
    errors: dict[str, str] = field(default_factory=dict)  # test id → first error lines
    seconds: float = 0.0
    output: str = ""

    def failing(self) -> dict[str, str]:
        return {t: self.errors.get(t, o) for t, o in sorted(self.outcomes.items()) if o != "passed"}

    def passed(self) -> int:
        return sum(o == "passed" for o in self.outcomes.values())


def _run_suite(workdir: Path, through_cloudwds: bool) -> SuiteRun:
    results = workdir / f"results-{'cloudwds' if through_cloudwds else 'webdataset'}.jsonl"
    results.unlink(missing_ok=True)
    launcher = ["-m", "cloudwds.run", "-m", "pytest"] if through_cloudwds else ["-m", "pytest"]
    deselect = [arg for test_id in _read_list(NEEDS_INTERNET) for arg in ("--deselect", test_id)]
    cmd = [
        sys.executable,
        *launcher,
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "_cloudwds_suite_results",
        f"--timeout={PER_TEST_TIMEOUT}",
        "--rootdir",
        str(workdir),
        "-o",
        "addopts=",
        "--continue-on-collection-errors",
        *deselect,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WDS_", "GOPEN_"))}
    env.pop("PYTHONPATH", None)
    env["CLOUDWDS_SUITE_RESULTS"] = str(results)
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    run = SuiteRun(
        seconds=time.monotonic() - start, output=proc.stdout[-4000:] + proc.stderr[-4000:]
    )
    assert results.exists(), f"the suite reported nothing:\n{run.output}"
    for line in results.read_text().splitlines():
        record = json.loads(line)
        test_id, outcome = record["nodeid"], record["outcome"]
        if record["when"] == "collect":
            run.outcomes[test_id] = "failed"
            run.errors[test_id] = "collection: " + record["error"]
        elif outcome == "failed":
            run.outcomes[test_id] = "failed"
            run.errors.setdefault(test_id, f"{record['when']}: {record['error']}")
        elif outcome == "skipped":
            run.outcomes.setdefault(test_id, "skipped")
        elif record["when"] == "call":
            run.outcomes.setdefault(test_id, "passed")
    return run


def _collect_ids(workdir: Path) -> list[str]:
    """The selected test ids, as collected with the real webdataset (ids do not depend on it)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [*cmd, "-o", "addopts="],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    assert proc.returncode == 0 and ids, proc.stdout + proc.stderr
    internet = _read_list(NEEDS_INTERNET)
    stale = sorted(set(internet) - set(ids))
    assert not stale, f"needs_internet.txt lists tests that do not exist: {stale}"
    return [test_id for test_id in ids if test_id not in internet]


def _per_test(run: SuiteRun, ids: list[str]) -> SuiteRun:
    """A module that failed to import fails each of its tests, with the import error."""
    for module, error in [(t, e) for t, e in run.errors.items() if "::" not in t]:
        del run.outcomes[module], run.errors[module]
        for test_id in ids:
            if test_id.startswith(module + "::"):
                run.outcomes[test_id] = "failed"
                run.errors[test_id] = error
    for test_id in ids:
        if test_id not in run.outcomes:
            run.outcomes[test_id] = "missing"
            run.errors[test_id] = "not run"
    return run


@dataclass
class Suite:
    workdir: Path
    ids: list[str]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    workdir = tmp_path_factory.mktemp("webdataset-suite")
    _prepare(workdir)
    return Suite(workdir, _collect_ids(workdir))


def _write_report(run: SuiteRun) -> None:
    """Keep the latest per-test results next to the cache, for grouping failures by cause."""
    path = _cache_dir() / "webdataset-suite-cloudwds.json"
    path.write_text(json.dumps({"outcomes": run.outcomes, "errors": run.errors}, indent=1))


def _describe(run: SuiteRun, label: str) -> str:
    return f"{label}: {run.passed()} passed of {len(run.outcomes)} selected in {run.seconds:.0f} s"


def test_suite_lists_are_well_formed() -> None:
    known = _read_list(KNOWN_DIFFERENCES)
    internet = _read_list(NEEDS_INTERNET)
    assert set(known).isdisjoint(internet)
    assert all(reason == "needs internet" for reason in internet.values())


def test_harness_against_real_webdataset(suite: Suite) -> None:
    """Our conftest and synthetic test data make webdataset's own suite pass on webdataset."""
    run = _per_test(_run_suite(suite.workdir, through_cloudwds=False), suite.ids)
    print(_describe(run, f"webdataset {VERSION}"))
    assert len(run.outcomes) > 150, run.output
    assert run.failing() == {}, run.output


def test_webdataset_suite_through_cloudwds(suite: Suite) -> None:
    """webdataset 1.0.2's tests pass on cloudwds, except the listed known differences."""
    run = _per_test(_run_suite(suite.workdir, through_cloudwds=True), suite.ids)
    _write_report(run)
    print(_describe(run, "cloudwds"))
    known = _read_list(KNOWN_DIFFERENCES)
    failing = run.failing()
    unexpected = {t: e for t, e in failing.items() if t not in known}
    stale = sorted(t for t in known if t not in run.outcomes)
    now_passing = sorted(t for t in known if run.outcomes.get(t) == "passed")
    assert len(run.outcomes) > 150, run.output
    assert not stale, f"known_differences.txt lists tests that do not exist: {stale}"
    assert not now_passing, (
        f"known_differences.txt lists tests that now pass: {now_passing} (drop them, e.g. with "
        "`python -m integration.webdataset_suite.update_known` after this run)"
    )
    assert not unexpected, "failing on cloudwds, not in known_differences.txt:\n" + "\n".join(
        f"{t}: {e}" for t, e in unexpected.items()
    )
