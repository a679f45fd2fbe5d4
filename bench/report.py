"""Summaries, targets, the markdown page and the plot, all computed from one results file.

``python -m bench.report bench/results/<run>.jsonl`` regenerates ``docs/benchmarks.md`` and
``docs/benchmarks.png`` from an existing run without re-measuring.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

RSS_FLAT_MIB = 16.0  # a pair of configurations is "flat" when peak RSS grows by at most this


@dataclass
class Stat:
    case: str
    variant: str
    lib: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    samples: int = 0
    nbytes: int = 0
    errors: list[str] = field(default_factory=list)
    rss_peak_kb: int | None = None
    rss_base_kb: int | None = None
    rss_children_kb: int | None = None
    checks: dict[str, Any] = field(default_factory=dict)  # e.g. decode_rgb8's pixels_identical

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def rate(self) -> float | None:
        m = self.median
        return self.samples / m if m and self.samples else None

    @property
    def mbps(self) -> float | None:
        m = self.median
        return self.nbytes / m / 1e6 if m and self.nbytes else None


@dataclass
class Data:
    path: str
    meta: dict[str, Any]
    cases: dict[str, dict[str, Any]]  # name -> case record
    stats: dict[str, dict[str, Stat]]  # case -> variant -> Stat


def load(path: str) -> Data:
    meta: dict[str, Any] = {}
    cases: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, Stat]] = defaultdict(dict)
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            kind = rec.get("kind")
            if kind == "meta":
                meta = rec
            elif kind == "end":
                meta["seconds"] = rec["seconds"]
            elif kind == "case":
                cases[rec["case"]] = rec
                for v in rec["variants"]:
                    stats[rec["case"]][v["name"]] = Stat(rec["case"], v["name"], v["lib"])
            elif kind in ("measure", "rss"):
                st = stats[rec["case"]].setdefault(
                    rec["variant"], Stat(rec["case"], rec["variant"], rec["lib"])
                )
                if "error" in rec:
                    st.errors.append(rec["error"])
                    continue
                if kind == "measure":
                    st.times.append(rec["seconds"])
                    if "cpu_seconds" in rec:
                        st.cpu.append(rec["cpu_seconds"])
                    st.samples = rec.get("samples") or 0
                    st.nbytes = rec.get("bytes") or 0
                    for key in CHECK_FIELDS:
                        if key in rec:
                            st.checks[key] = rec[key]
                if "rss_peak_kb" in rec:
                    st.rss_peak_kb = max(st.rss_peak_kb or 0, rec["rss_peak_kb"])
                    st.rss_base_kb = rec.get("rss_base_kb")
                    st.rss_children_kb = rec.get("rss_children_peak_kb")
    return Data(path, meta, cases, dict(stats))


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    case: str
    text: str
    value: float | None
    shown: str
    ok: bool | None  # None: not measured
    cpu_shown: str = "-"  # the same ratio on CPU time (single-process cases), for reference


def _ratio(stats: dict[str, Stat], num: str, den: str, cpu: bool = False) -> float | None:
    a, b = stats.get(num), stats.get(den)
    if not a or not b:
        return None
    ma, mb = (a.cpu_median, b.cpu_median) if cpu else (a.median, b.median)
    if not ma or not mb:
        return None
    return mb / ma  # throughput(num) / throughput(den)


def _show(v: float | None, threshold: float, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "time_ratio_max" or threshold >= 1.5:
        return f"{v:.2f}x"
    return f"{100 * v:.0f}%"


CPU_COMPARABLE = {
    "raw_small",
    "raw_jpeg",
    "raw_large",
    "decode_rgb",
    "decode_rgb8",
    "decode_rgb8_shared",
    "shuffle",
    "s3_warm_cache",
}
# Extra fields of a measurement that the page reports (decode_rgb8: the untimed pixel check).
CHECK_FIELDS = ("pixels_identical", "pixels_checked", "simplejpeg")


def rss_pairs(data: Data) -> list[tuple[str, str, str, Stat, Stat, bool]]:
    """(lib, what, label, smaller config, larger config, counts for the target) of the rss case.

    The target pairs compare shards that are all larger than the readers' buffers; the tiny
    shard (0.4 MB) vs big shard pair is shown for information: it includes the fixed read-ahead
    buffers that a tiny shard never fills.
    """
    st = data.stats.get("rss", {})
    out = []
    for lib in ("cloudwds", "webdataset"):
        names = {v.split(":", 1)[1]: s for v, s in st.items() if s.lib == lib}

        def counts(prefix: str, names: dict[str, Stat] = names) -> list[int]:
            found = []
            for n in names:
                rest = n[len(prefix) + 1 :] if n.startswith(prefix + "x") else ""
                if rest.isdigit():
                    found.append(int(rest))
            return sorted(found)

        def many(prefix: str) -> tuple[str | None, str | None]:
            """(fewer, more): 2 -> N shards when there are more than 2 (1 -> 2 includes the one
            prefetched shard, a constant), else 1 -> N."""
            ks = counts(prefix)
            if len(ks) < 2:
                return None, None
            lo = 2 if 2 in ks and ks[-1] > 2 else ks[0]
            return f"{prefix}x{lo}", f"{prefix}x{ks[-1]}"

        pairs = (
            (*many("small"), "number of shards, small records", True),
            (*many("large"), "number of shards, 4 MB members", True),
            ("jpegx1", "ttfs-big", "shard size, local", True),
            (*many("s3-jpeg"), "number of shards, S3", True),
            ("s3-jpegx1", "s3-ttfs-big", "shard size, S3", True),
            (*many("s3-cold-cache-jpeg"), "number of shards, S3 into an empty cache", True),
            ("s3-cold-cache-jpegx1", "s3-cold-cache-ttfs-big", "shard size, S3 into a cache", True),
            (
                "s3-cold-cache-jpegx1",
                "s3-cold-cache-jpegx2",
                "1 -> 2 shards, cache (prefetch)",
                False,
            ),
            ("s3-ttfs-small", "s3-ttfs-big", "tiny vs big shard, S3 (buffers fill up)", False),
        )
        seen = set()
        for a, b, what, counted in pairs:
            if b is not None and a in names and b in names and (a, b) not in seen:
                seen.add((a, b))
                out.append((lib, what, f"{a} -> {b}", names[a], names[b], counted))
    return out


def verdicts(data: Data) -> list[Verdict]:
    out: list[Verdict] = []
    for name, case in data.cases.items():
        stats = data.stats.get(name, {})
        for t in case.get("targets", []):
            v = _ratio(stats, t["num"], t["den"])
            if v is not None and t.get("ref_num"):
                ref = _ratio(stats, t["ref_num"], t["ref_den"])
                v = None if not ref else v / ref
            if t["kind"] == "time_ratio_max":
                # _ratio is den time / num time, here big / small, which must stay <= threshold
                ok = None if v is None else v <= t["threshold"]
            else:
                ok = None if v is None else v >= t["threshold"]
            shown = _show(v, t["threshold"], t["kind"])
            cpu = "-"
            if name in CPU_COMPARABLE:
                cpu = _show(_ratio(stats, t["num"], t["den"], cpu=True), t["threshold"], t["kind"])
            out.append(Verdict(name, f"{case['title']}: {t['text']}", v, shown, ok, cpu))
    pairs = [p for p in rss_pairs(data) if p[0] == "cloudwds" and p[5]]
    if pairs:
        growth = [((b.rss_peak_kb or 0) - (a.rss_peak_kb or 0)) / 1024 for *_, a, b, _ in pairs]
        worst = max(growth)
        out.append(
            Verdict(
                "rss",
                f"peak RSS flat in number and size of shards (growth <= {RSS_FLAT_MIB:g} MiB)",
                worst,
                f"max growth {worst:+.1f} MiB",
                worst <= RSS_FLAT_MIB,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Text output
# --------------------------------------------------------------------------------------------


def _s(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _mark(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[ok]


def console_summary(data: Data) -> str:
    lines = [
        "",
        f"{'case':16} {'variant':22} {'median s':>9} {'CPU s':>8} {'samples/s':>12} {'MB/s':>8}",
    ]
    for name, stats in data.stats.items():
        if name == "rss":
            continue
        for st in stats.values():
            err = f"  ERROR {st.errors[0][:60]}" if st.errors and not st.times else ""
            lines.append(
                f"{name:16} {st.variant:22} {_s(st.median):>9} {_s(st.cpu_median):>8} "
                f"{_rate(st.rate):>12} "
                f"{_s(st.mbps, '{:.0f}'):>8}{err}"
            )
    lines.append("")
    for v in verdicts(data):
        cpu = f" (by CPU time {v.cpu_shown})" if v.cpu_shown != "-" else ""
        lines.append(f"[{_mark(v.ok)}] {v.text}: {v.shown}{cpu}")
    return "\n".join(lines)


def _case_table(data: Data, name: str) -> list[str]:
    stats = data.stats.get(name, {})
    case = data.cases[name]
    notes = {v["name"]: v["note"] for v in case["variants"]}
    wds = stats.get("webdataset")
    rows = [
        "| variant | median s | min–max s | CPU s | samples/s | MB/s | vs webdataset | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in stats.values():
        label = st.variant + (f" ({notes[st.variant]})" if notes.get(st.variant) else "")
        if not st.times:
            err = st.errors[0] if st.errors else "not run"
            rows.append(f"| {label} | error: `{err[:160]}` | | | | | | |")
            continue
        vs = "-"
        mine = st.median
        if wds and wds.median and mine and st.lib != "webdataset" and st.variant != "webdataset":
            vs = f"{wds.median / mine:.2f}x"
        rss = "-"
        if st.rss_peak_kb:
            rss = f"{st.rss_peak_kb / 1024:.0f}"
            if st.rss_children_kb and case["variants"] and name == "loader":
                rss += f" (+workers {st.rss_children_kb / 1024:.0f})"
        rows.append(
            f"| {label} | {st.median:.3f} | {min(st.times):.3f}–{max(st.times):.3f} | "
            f"{_s(st.cpu_median)} | {_rate(st.rate)} | {_s(st.mbps, '{:.0f}')} | {vs} | {rss} |"
        )
    return rows


def _checks_text(data: Data, name: str) -> list[str]:
    """decode_rgb8: whether every decoded image equalled bare Pillow's (checked untimed)."""
    st = data.stats.get(name, {}).get("cloudwds")
    if not name.startswith("decode_rgb8") or st is None or "pixels_identical" not in st.checks:
        return []
    c = st.checks
    same = {True: "yes", False: "**NO**", None: "not checked"}[c["pixels_identical"]]
    via = "simplejpeg (libjpeg-turbo)" if c.get("simplejpeg") else "Pillow (simplejpeg absent)"
    count = c.get("pixels_checked")
    n = f"{count:,}" if isinstance(count, int) else "?"
    return [
        f"Pixels identical to bare Pillow on all {n} images: {same}; cloudwds decoded "
        f"JPEGs through {via}.",
        "",
    ]


def _cpu_per_sample_text(data: Data, name: str) -> list[str]:
    """loader_ceiling: CPU per sample of each variant, children included, vs one process."""
    stats = data.stats.get(name, {})
    base = stats.get("one-process")
    if name != "loader_ceiling" or base is None or not base.cpu_median or not base.samples:
        return []
    ref = base.cpu_median / base.samples
    parts = [
        f"{st.variant} {st.cpu_median / st.samples * 1e6:.0f} us ({st.cpu_median / st.samples / ref:.2f}x)"
        for st in stats.values()
        if st.cpu_median and st.samples
    ]
    return [
        "CPU per sample (this process plus its workers or copies; ratio to one process): "
        + ", ".join(parts)
        + ".",
        "",
    ]


def _ttfs_sizes(data: Data) -> tuple[str, str]:
    """Labels for the mid (one jpeg shard) and big (ttfs-big) shards, from the run's metadata."""
    sets = data.meta.get("sets", {})
    j, t = sets.get("jpeg"), sets.get("ttfs")
    mid = f"{j['bytes'] / j['shards'] / 1e6:.0f} MB shard" if j else "jpeg shard"
    big = f"{(t['bytes'] - 368_640) / 1e6:.0f} MB shard" if t else "big shard"
    return mid, big


# What a case measures, under its heading on the page (the rest is in bench/README.md).
CASE_NOTES: dict[str, str] = {
    "s3_cold_fresh": (
        "Each measurement is a new `python -c` program, timed from just before it is started to "
        "the moment it holds its last sample (`CLOCK_MONOTONIC`, one clock for all processes): "
        "the interpreter's start, every import (cloudwds, s3fs, botocore, aiohttp...), the "
        "first request and the whole epoch count; teardown does not (`os._exit`). `cloudwds`: "
        "`WebDataset(urls, cache_dir=False, storage_options=...)` and a `for` loop; "
        "`fsspec-cat`: `s3fs.S3FileSystem(...).cat_file` of every shard; `python`: a program "
        "doing nothing (the floor both pay). Bytecode is cached for every variant as after a "
        "`pip install` (`PYTHONPYCACHEPREFIX=bench/data/pycache`, filled by an untimed run): "
        "with `PYTHONDONTWRITEBYTECODE=1`, as on this machine, a development checkout would "
        "recompile every cloudwds module (~0.1 s) in each new process while s3fs loads its "
        "`.pyc`. `litdata`: its own conversion of the same samples, read from the same bucket "
        "into an empty chunk cache, imports (torch included) timed too."
    ),
    "decode_rgb8": (
        "Each measurement runs in a fresh process that loads only what its variant uses, after "
        "one untimed warm-up epoch in that process (imports, first-use caches), as a user's "
        "loop runs. Bare Pillow's speed depends on the allocator state of the process it runs "
        "in: in a process that did nothing else, glibc gives each image's buffers fresh `mmap` "
        "pages (~145 minor page faults per 256×256 image); in a process whose heap has grown, "
        "it reuses heap memory. `decode_rgb8_shared` shows the other mode. `litdata`: its own "
        "conversion (encoded bytes kept), each `jpg` decoded with the same bare Pillow call in "
        "the loop."
    ),
    "decode_rgb8_shared": (
        "The same variants, all in the benchmark process one after the other (no target): there "
        "Pillow runs on a grown heap, without the per-image page faults, and the ratio is "
        "smaller. Both modes are real; the issue's Pillow figures (1,130–1,420/s) match the "
        "fresh-process mode."
    ),
    "loader_ceiling": (
        "`litdata`: `StreamingDataLoader(StreamingDataset(..., transform=rgb8), batch_size=64, "
        "num_workers=2)` over its own conversion of the same shards, the transform decoding "
        "with bare Pillow; timed after imports, worker start included; CPU includes its "
        "workers."
    ),
    "s3_stream": (
        "`litdata`: its own conversion of the same samples in the same bucket, one epoch into "
        "an empty chunk cache (litdata always reads through its cache), in its own process, "
        "timed after imports."
    ),
}


def markdown(data: Data, results_rel: str) -> str:
    m = data.meta
    v = m.get("versions", {})
    sets = m.get("sets", {})
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.run` from "
        f"`{results_rel}` (regenerate the page with `python -m bench.report {results_rel}`).",
        "See `bench/README.md` (in the repository) for what each number means.",
        "",
        f"- Run: {m.get('date', '?')}, {m.get('repeat', '?')} repetitions per case, "
        f"total {m.get('seconds', 0) / 60:.1f} min{' (quick)' if m.get('quick') else ''}.",
        f"- Machine: {m.get('cpus', '?')} CPUs, {m.get('platform', '?')}, "
        f"Python {m.get('python', '?')}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"- cloudwds at commit `{m.get('commit', '?')}`"
        + (" with uncommitted changes in `cloudwds/`" if m.get("cloudwds_dirty") else "")
        + ".",
        "- Data: "
        + "; ".join(
            f"{n}: {s['shards']} shards, {s['samples']:,} samples, {s['bytes'] / 1e6:.0f} MB"
            for n, s in sets.items()
        )
        + ".",
        "- All numbers are medians over the repetitions; cloudwds, webdataset and the limits run "
        "alternately on the same files in the same run. Ratios compare throughput.",
        "",
        "![benchmarks](benchmarks.png)",
        "",
        "## Targets",
        "",
        "The verdict uses wall-clock medians. *By CPU time* is the same ratio on the CPU time of "
        "the benchmark process, shown for single-process cases only: it is much less affected "
        "by other load on this shared 2-core machine (see the load averages below).",
        "",
        "| target | measured | result | by CPU time |",
        "|---|---:|:---:|---:|",
    ]
    for vd in verdicts(data):
        out.append(f"| {vd.text} | {vd.shown} | {_mark(vd.ok)} | {vd.cpu_shown} |")
    if any(vd.ok is False for vd in verdicts(data)):
        out += [
            "",
            "Missed targets: the profile that explains each and what would close it are in "
            "`bench/README.md` (in the repository).",
        ]
    out += ["", "## Cases", ""]
    for name, case in data.cases.items():
        if name in ("ttfs", "rss"):
            continue
        out += [f"### `{name}`: {case['title']}", ""]
        if name in CASE_NOTES:
            out += [CASE_NOTES[name], ""]
        if case.get("loadavg"):
            la = case["loadavg"]
            out += [f"Load average at the start: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}.", ""]
        out += _case_table(data, name)
        out.append("")
        out += _checks_text(data, name)
        out += _cpu_per_sample_text(data, name)
    if "ttfs" in data.cases:
        case = data.cases["ttfs"]
        stats = data.stats["ttfs"]
        out += [
            f"### `ttfs`: {case['title']}",
            "",
            "Dataset construction + `iter` + first `next`, in a fresh process per measurement "
            "(library imports excluded). `fsspec` is the endpoint's own floor: a new "
            "`S3FileSystem` and one `cat_file` of the first 1 MiB. moto answers every GET, "
            "ranged or not, by copying the whole object, so on this emulator even that floor "
            "grows with the object size (real S3 does not).",
            "",
            "| library | tiny shard (0.4 MB) | "
            + " | ".join(_ttfs_sizes(data))
            + " | big / tiny |",
            "|---|---:|---:|---:|---:|",
        ]
        for lib in ("cloudwds", "webdataset", "fsspec"):
            cells = []
            for size in ("small", "mid", "big"):
                st = stats.get(f"{lib}-{size}")
                if st is None:
                    cells.append("-")
                elif not st.times:
                    cells.append(f"error: `{st.errors[0][:100] if st.errors else '?'}`")
                else:
                    cells.append(f"{st.median:.3f} s ({min(st.times):.3f}–{max(st.times):.3f})")
            a, b = stats.get(f"{lib}-small"), stats.get(f"{lib}-big")
            ratio = f"{b.median / a.median:.2f}x" if a and b and a.median and b.median else "-"
            out.append(f"| {lib} | {' | '.join(cells)} | {ratio} |")
        cells = []
        for size in ("small", "mid", "big"):
            c, f = stats.get(f"cloudwds-{size}"), stats.get(f"fsspec-{size}")
            cm, fm = (c.median if c else None), (f.median if f else None)
            cells.append(f"{cm - fm:+.3f} s" if cm and fm else "-")
        out.append(f"| cloudwds − fsspec floor | {' | '.join(cells)} | |")
        out.append("")
    if "rss" in data.cases:
        out += [
            f"### `rss`: {data.cases['rss']['title']}",
            "",
            "`ru_maxrss` of a child process that imports the library and reads every sample of "
            "the configuration once; *base* is the RSS right after the imports.",
            "",
            "| configuration | cloudwds peak MiB (above base) | webdataset peak MiB (above base) |",
            "|---|---:|---:|",
        ]
        rss_stats = data.stats["rss"]
        rss_configs: list[str] = []
        for vname in rss_stats:
            conf = vname.split(":", 1)[1]
            if conf not in rss_configs:
                rss_configs.append(conf)
        for conf in rss_configs:
            cells = []
            for lib in ("cloudwds", "webdataset"):
                s = rss_stats.get(f"{lib}:{conf}")
                if s is None or s.rss_peak_kb is None:
                    cells.append(f"error: `{s.errors[0][:80]}`" if s and s.errors else "-")
                else:
                    above = s.rss_peak_kb - (s.rss_base_kb or 0)
                    cells.append(f"{s.rss_peak_kb / 1024:.0f} (+{above / 1024:.0f})")
            out.append(f"| {conf} | {cells[0]} | {cells[1]} |")
        out += ["", "| library | comparison | peak RSS growth MiB |", "|---|---|---:|"]
        for lib, what, label, a, b, counted in rss_pairs(data):
            g = ((b.rss_peak_kb or 0) - (a.rss_peak_kb or 0)) / 1024
            out.append(f"| {lib} | {what}: {label}{'' if counted else ' (info)'} | {g:+.1f} |")
        out.append("")
    errors = [
        (name, st.variant, e)
        for name, stats in data.stats.items()
        for st in stats.values()
        for e in st.errors[:1]
    ]
    if errors:
        out += ["## Errors", ""]
        out += [f"- `{c}` / `{v}`: `{e[:300]}`" for c, v, e in errors]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def plot(data: Data, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    # (a) throughput relative to webdataset, per case (bars: median; whiskers: min/max)
    ax = axes[0][0]
    names, mid, lo, hi, marks = [], [], [], [], []
    for name, stats in data.stats.items():
        w, c = stats.get("webdataset"), stats.get("cloudwds")
        if not w or not c or not w.median or not c.median or name in ("ttfs", "rss"):
            continue
        names.append(name)
        r = w.median / c.median
        mid.append(r)
        lo.append(r - min(w.times) / max(c.times) if r > 0 else 0)
        hi.append(max(w.times) / min(c.times) - r)
        wanted = [
            tg["threshold"]
            for tg in data.cases[name].get("targets", [])
            if tg["num"] == "cloudwds" and tg["den"] == "webdataset"
        ]
        marks.append(wanted[0] if wanted else None)
    y = list(range(len(names)))
    ax.barh(y, mid, xerr=[lo, hi], color="tab:blue", capsize=3, label="cloudwds")
    for i, m in enumerate(marks):
        if m:
            ax.plot([m, m], [i - 0.4, i + 0.4], color="k", lw=2.5)
    ax.plot([], [], color="k", lw=2.5, label="target")
    ax.axvline(1.0, color="tab:orange", lw=2, label="webdataset = 1")
    ax.set_yticks(y, names)
    ax.set_xscale("log")
    ax.set_xlabel("cloudwds throughput / webdataset throughput (log)")
    ax.set_title("Speed vs webdataset (same run, same files)")
    ax.legend(fontsize=7, loc="center right", framealpha=0.9)
    ax.invert_yaxis()
    # (b) targets: measured / required
    ax = axes[0][1]
    labels, vals, colors = [], [], []
    for vd in verdicts(data):
        if vd.value is None or vd.case == "rss":
            continue
        case = data.cases[vd.case]
        t: dict[str, Any] = next(t for t in case["targets"] if t["text"] in vd.text)
        if t["kind"] == "time_ratio_max":
            frac = t["threshold"] / vd.value
            labels.append(f"{vd.case}: big/small <= {t['threshold']:g}")
        else:
            frac = vd.value / t["threshold"]
            want = f"{t['threshold']:g}x" if t["threshold"] >= 1.5 else f"{t['threshold']:.0%}"
            labels.append(f"{vd.case}: {t['num']} >= {want} {t['den']}")
        vals.append(frac)
        colors.append("tab:green" if vd.ok else "tab:red")
    ax.barh(range(len(vals)), vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color="k", lw=1.5)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("measured / required (>= 1 meets the target)")
    ax.set_title("Targets (green: met, red: missed)")
    ax.invert_yaxis()
    # (c) time to first sample
    ax = axes[1][0]
    ttfs = data.stats.get("ttfs", {})
    libs = ("cloudwds", "webdataset", "fsspec")
    mid_label, big_label = _ttfs_sizes(data)
    sizes = (("small", "tiny shard (0.4 MB)"), ("mid", mid_label), ("big", big_label))
    for j, (size, label) in enumerate(sizes):
        ss = [ttfs.get(f"{lib}-{size}") for lib in libs]
        med = [s.median if s and s.median else 0 for s in ss]
        err = [
            [m - min(s.times) if s and s.times else 0 for s, m in zip(ss, med)],
            [max(s.times) - m if s and s.times else 0 for s, m in zip(ss, med)],
        ]
        xs = [i + (j - 1) * 0.27 for i in range(len(libs))]
        ax.bar(xs, med, width=0.27, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(libs)), ["cloudwds", "webdataset", "fsspec floor"])
    ax.set_ylabel("seconds (median, min-max)")
    ax.set_title("Time to first sample from S3 (fresh process)")
    ax.legend(fontsize=8)
    # (d) peak RSS per configuration
    ax = axes[1][1]
    rss = data.stats.get("rss", {})
    configs: list[str] = []
    for vname in rss:
        conf = vname.split(":", 1)[1]
        if conf not in configs:
            configs.append(conf)
    for j, lib in enumerate(libs):
        vals_ = [
            ((rss.get(f"{lib}:{c}") and rss[f"{lib}:{c}"].rss_peak_kb) or 0) / 1024 for c in configs
        ]
        ax.bar([i + (j - 0.5) * 0.4 for i in range(len(configs))], vals_, width=0.4, label=lib)
    ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("peak RSS, MiB")
    ax.set_title("Peak RSS of one epoch (fresh process each)")
    ax.legend(fontsize=8)
    m = data.meta
    fig.suptitle(
        f"cloudwds {m.get('versions', {}).get('cloudwds', '?')} vs webdataset "
        f"{m.get('versions', {}).get('webdataset', '?')} — {m.get('cpus', '?')} CPUs, "
        f"{m.get('date', '')}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_docs(data: Data, docs_dir: str, results_rel: str) -> tuple[str, str]:
    os.makedirs(docs_dir, exist_ok=True)
    md = os.path.join(docs_dir, "benchmarks.md")
    png = os.path.join(docs_dir, "benchmarks.png")
    with open(md, "w") as f:
        f.write(markdown(data, results_rel) + "\n")
    try:
        plot(data, png)
    except ImportError as exn:  # the page is written; only the plot needs matplotlib
        print(f"# {png} not redrawn ({exn}): pip install -e '.[bench]'", file=sys.stderr)
    return md, png


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = sys.argv[1]
    d = load(results)
    print(console_summary(d))
    write_docs(d, os.path.join(root, "docs"), os.path.relpath(os.path.abspath(results), root))
