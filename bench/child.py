"""Run one variant of one case in this (fresh) process and print one JSON line.

``python -m bench.child '{"quick": false, "workdir": ..., "endpoint": ..., "case": ..., "variant": ...}'``

Used for peak RSS (``VmHWM`` of this process; ``ru_maxrss`` of its children, e.g. DataLoader
workers or ``aws`` pipes) and for time to first sample. The library under test (and s3fs for cloudwds
on S3) is imported before the clock starts; ``rss_base_kb`` is the RSS right after imports.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    from .cases import S3_CASES, Context, build_case, measure

    ctx = Context(quick=spec["quick"], workdir=spec["workdir"], endpoint=spec.get("endpoint"))
    case = build_case(ctx, spec["case"])
    variant = next(v for v in case.variants if v.name == spec["variant"])
    remote = bool(ctx.endpoint) and (case.name in S3_CASES or case.name == "rss")
    if variant.lib == "cloudwds":
        import cloudwds

        # `import cloudwds` is lazy (PEP 562): resolve the dataset class so its modules load
        # before the clock too, as `import webdataset` loads everything at once
        cloudwds.WebDataset  # noqa: B018

        if remote:
            import s3fs  # noqa: F401
    elif variant.lib == "webdataset":
        import webdataset  # type: ignore[import-untyped]  # noqa: F401
    elif remote:
        import s3fs  # noqa: F401
    if case.child_warmup and not variant.own_process:
        measure(variant)  # untimed: imports, first-use caches, the allocator's steady state
    base = _status_kb("VmRSS")
    out = measure(variant)
    out["rss_base_kb"] = base
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives fork+exec, so a child would report
    # the high-water mark of the benchmark process that started it.
    out["rss_peak_kb"] = _status_kb("VmHWM")
    out["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["rss_children_peak_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown: abandoned readers (a webdataset pipe still streaming a big
    # shard) would otherwise be drained or waited for; the measurement is already out.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
