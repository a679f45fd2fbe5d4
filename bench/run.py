"""Run the cloudwds benchmark suite: ``python -m bench.run [--quick] [--repeat N] [--cases ...]``.

Generates the shard sets (once, into ``bench/data/``), starts a local S3 endpoint (moto) and
uploads the same shards, then runs every case: cloudwds, webdataset and the raw limits on the
same files, alternating in a rotating order on every repetition. Each measurement is one JSON
line in ``bench/results/<timestamp>[-quick].jsonl``; at the end the summary is printed and
``docs/benchmarks.md`` + ``docs/benchmarks.png`` are regenerated from that file (pass
``--no-docs`` to leave them alone, e.g. for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

from . import report
from .cases import CASE_NAMES, S3_CASES, S3_SETS, Case, Context, Variant, build_case, measure
from .datasets import build_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
MIN_TIME = 0.25  # a measurement repeats a fast epoch until this much time is timed


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "cloudwds",
        "webdataset",
        "torch",
        "numpy",
        "pillow",
        "fsspec",
        "s3fs",
        "moto",
        "awscli",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    from . import others

    out["litdata (venv)"] = others.version("litdata")
    return out


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - no git, no repository: the commit is left blank
        return ""


def run_child(ctx: Context, case: Case, variant: Variant, timeout: float = 900) -> dict[str, Any]:
    spec = {**ctx.to_json(), "case": case.name, "variant": variant.name}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.child", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"child timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exit {proc.returncode}: {' | '.join(tail)}"[:500]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Writer:
    def __init__(self, path: str, run_id: str):
        self.path = path
        self.run_id = run_id
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._f = open(path, "w")  # noqa: SIM115 - closed in close()

    def write(self, kind: str, **fields: Any) -> None:
        self._f.write(json.dumps({"run": self.run_id, "kind": kind, **fields}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _fmt(res: dict[str, Any]) -> str:
    if "error" in res:
        return "ERROR " + str(res["error"])[:100]
    return f"{float(res['seconds']):.3f}s"


def run_case(ctx: Context, case: Case, repeat: int, out: Writer, case_rss: bool = True) -> None:
    out.write(
        "case",
        case=case.name,
        title=case.title,
        dataset=case.dataset,
        samples=case.samples,
        bytes=case.nbytes,
        variants=[{"name": v.name, "lib": v.lib, "note": v.note} for v in case.variants],
        targets=[vars(t) for t in case.targets],
        fresh_process=case.fresh_process,
        loadavg=os.getloadavg(),
    )
    if case.prepare is not None:
        try:
            case.prepare()
        except Exception as exn:  # noqa: BLE001 - reported; the variants then record their errors
            print(f"  prepare failed: {type(exn).__name__}: {exn}", flush=True)
    reps = 1 if case.name == "rss" else repeat
    k = len(case.variants)
    for rep in range(reps):
        order = case.variants[rep % k :] + case.variants[: rep % k]
        line = []
        for v in order:
            res = run_child(ctx, case, v) if case.fresh_process else measure(v, MIN_TIME)
            res.setdefault("samples", case.samples)
            res.setdefault("bytes", case.nbytes)
            out.write("measure", case=case.name, variant=v.name, lib=v.lib, rep=rep, **res)
            line.append(f"{v.name}={_fmt(res)}")
        print(f"  rep {rep}: " + "  ".join(line), flush=True)
    if case.rss and case_rss:
        for v in case.variants:
            if v.lib == "limit":
                continue
            res = run_child(ctx, case, v)
            out.write("rss", case=case.name, variant=v.name, lib=v.lib, **res)
            peak = res.get("rss_peak_kb")
            print(
                f"  peak RSS {v.name}: "
                + (f"{peak / 1024:.0f} MiB" if peak else res.get("error", "?")),
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller shard sets, 3 repetitions")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 5; 3 quick)")
    parser.add_argument(
        "--cases", default="all", help="comma-separated subset of: " + ",".join(CASE_NAMES)
    )
    parser.add_argument("--out", default=None, help="results file (default bench/results/...)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.*")
    parser.add_argument(
        "--case-rss",
        choices=("on", "off"),
        default=None,
        help="peak RSS of every case in a child process (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)

    repeat = args.repeat or (3 if args.quick else 5)
    case_rss = (args.case_rss or ("off" if args.quick else "on")) == "on"
    names = list(CASE_NAMES) if args.cases == "all" else args.cases.split(",")
    unknown = [n for n in names if n not in CASE_NAMES]
    if unknown:
        parser.error(f"unknown cases: {unknown}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id = stamp + ("-quick" if args.quick else "")
    path = args.out or os.path.join(RESULTS, run_id + ".jsonl")
    workdir = os.path.join(ROOT, "bench", "data", "work-quick" if args.quick else "work-full")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)

    t_start = time.perf_counter()
    sets = build_all(args.quick)
    out = Writer(path, run_id)
    out.write(
        "meta",
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        quick=args.quick,
        repeat=repeat,
        case_rss=case_rss,
        cases=names,
        python=platform.python_version(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        versions=_versions(),
        commit=_git("rev-parse", "--short", "HEAD"),
        cloudwds_dirty=bool(_git("status", "--porcelain", "--", "cloudwds")),
        sets={
            n: {"shards": len(s.files), "samples": s.samples, "bytes": s.nbytes}
            for n, s in sets.items()
        },
    )
    s3 = None
    try:
        if set(names) & (S3_CASES | {"rss"}):
            from .s3 import MotoS3

            s3 = MotoS3(log_dir=workdir).start()
            t0 = time.perf_counter()
            for name in S3_SETS:
                for p in sets[name].files:
                    from .cases import s3_key

                    s3.upload(p, s3_key(p))
            print(f"# moto S3 at {s3.endpoint}; uploaded in {time.perf_counter() - t0:.1f} s")
        ctx = Context(
            quick=args.quick, workdir=workdir, endpoint=s3.endpoint if s3 else None, sets=sets
        )
        for name in names:
            t0 = time.perf_counter()
            case = build_case(ctx, name)
            print(f"# {name}: {case.title}", flush=True)
            run_case(ctx, case, repeat, out, case_rss)
            print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    finally:
        if s3 is not None:
            s3.stop()
        out.write("end", seconds=time.perf_counter() - t_start)
        out.close()
    print(f"# results: {os.path.relpath(path, ROOT)} ({time.perf_counter() - t_start:.0f} s)")
    data = report.load(path)
    print(report.console_summary(data))
    if not args.no_docs:
        md, png = report.write_docs(data, os.path.join(ROOT, "docs"), os.path.relpath(path, ROOT))
        print(f"# wrote {os.path.relpath(md, ROOT)} and {os.path.relpath(png, ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
