"""The benchmark cases. Each case runs several *variants* on the same files; one call of a
variant's ``run`` is one timed measurement and returns a dict (``samples``, ``bytes``, extras).

Variants have a ``lib``: ``cloudwds``, ``webdataset`` or ``limit`` (a raw limit from
:mod:`bench.limits`). The runner (:mod:`bench.run`) alternates the variants of a case in a
rotating order on every repetition, so drift (thermal, page cache, other load) hits all of them.

Both libraries get the same construction: ``WebDataset(urls, shardshuffle=False)`` (webdataset
1.0.2 warns without an explicit ``shardshuffle``), every sample consumed by a plain ``for`` loop.
S3 for webdataset is its documented ``pipe:aws s3 cp s3://... -`` (with ``AWS_ENDPOINT_URL``);
cloudwds reads ``s3://`` through fsspec with ``storage_options``.

Cases are built from a :class:`Context` that a fresh child process can rebuild from JSON
(:mod:`bench.child`), which is how peak RSS and time to first sample are measured.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .datasets import ShardSet, build_all
from .s3 import BUCKET, KEY, SECRET

Result = dict[str, Any]


@dataclass
class Variant:
    name: str
    lib: str  # cloudwds | webdataset | limit
    run: Callable[[], Result]
    setup: Callable[[], None] | None = None  # untimed, before every measurement
    note: str = ""
    own_process: bool = False  # runs its own interpreter (other libraries' venv): no child warm-up


@dataclass
class Target:
    """``value(num) / value(den) >= threshold`` where value is throughput (1 / median time)."""

    num: str
    den: str
    threshold: float
    text: str
    kind: str = "throughput"  # throughput | time_ratio_max (den/num time ratio must be <=)
    # time_ratio_max only: divide by the same ratio of these variants (the endpoint's own floor)
    ref_num: str | None = None
    ref_den: str | None = None


@dataclass
class Case:
    name: str
    title: str
    dataset: str
    variants: list[Variant]
    samples: int
    nbytes: int
    targets: list[Target] = field(default_factory=list)
    prepare: Callable[[], object] | None = None  # untimed, once before the repetitions
    fresh_process: bool = False  # every measurement in a new child (TTFS, process-wide state)
    child_warmup: bool = False  # fresh_process: one untimed run in the child before the timed one
    rss: bool = True  # measure peak RSS of the non-limit variants in a child


@dataclass
class Context:
    quick: bool
    workdir: str
    endpoint: str | None = None
    sets: dict[str, ShardSet] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sets:
            self.sets = build_all(self.quick, log=lambda *_a: None)

    def to_json(self) -> dict[str, Any]:
        return {"quick": self.quick, "workdir": self.workdir, "endpoint": self.endpoint}

    @property
    def storage_options(self) -> dict[str, str]:
        assert self.endpoint, "S3 endpoint not started"
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint}

    def s3_urls(self, name: str, n: int | None = None) -> list[str]:
        return [f"s3://{BUCKET}/{s3_key(p)}" for p in self.sets[name].paths(n)]

    def s3fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


def s3_key(path: str) -> str:
    """Object name of a local shard: ``<set>/<file>``."""
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


S3_SETS = ("jpeg", "ttfs")


# --------------------------------------------------------------------------------------------
# Dataset constructors (imports are lazy so a child loads only the library it measures)
# --------------------------------------------------------------------------------------------


def cwds_dataset(urls: list[str], **kw: Any) -> Any:
    import cloudwds

    # cloudwds caches remote shards by default; a case measures a cache only when it passes one
    kw.setdefault("cache_dir", False)
    return cloudwds.WebDataset(urls, shardshuffle=False, **kw)


def wds_dataset(urls: list[str], **kw: Any) -> Any:
    import webdataset  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return webdataset.WebDataset(urls, shardshuffle=False, **kw)


def make_dataset(lib: str, urls: list[str], **kw: Any) -> Any:
    return (cwds_dataset if lib == "cloudwds" else wds_dataset)(urls, **kw)


def pipe_urls(urls: list[str]) -> list[str]:
    return [f"pipe:aws s3 cp {u} -" for u in urls]


def consume(it: Any) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


def _iterate(factory: Callable[[], Any]) -> Callable[[], Result]:
    def run() -> Result:
        return {"samples": consume(factory())}

    return run


def _libs() -> tuple[str, str]:
    return ("cloudwds", "webdataset")


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def raw_case(ctx: Context, name: str, target: float) -> Case:
    s = ctx.sets[name]
    paths = s.paths()
    variants = [
        Variant(lib, lib, _iterate(functools.partial(make_dataset, lib, paths))) for lib in _libs()
    ]
    variants += [
        Variant("cat", "limit", lambda: {"bytes": limits.cat_files(paths)}, note="read bytes"),
        Variant(
            "tar-headers",
            "limit",
            lambda: {"members": limits.tar_headers(paths)},
            note="parse headers only",
        ),
    ]
    if name == "large":
        variants.append(
            Variant(
                "read-members",
                "limit",
                lambda: {"members": limits.read_members(paths)},
                note="one read(size) per member into new bytes",
            )
        )
    return Case(
        name=f"raw_{name}",
        title=f"raw iteration, {name} shards",
        dataset=name,
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        targets=[Target("cloudwds", "webdataset", target, f">= {target:g}x webdataset")],
        prepare=lambda: limits.cat_files(paths),
        # Large members: cloudwds tunes glibc's allocator (cloudwds.allocator) in the process
        # that reads them, which would speed up webdataset too if they shared this process.
        fresh_process=name == "large",
    )


def decode_case(ctx: Context) -> Case:
    s = ctx.sets["jpeg"]
    n = 1 if ctx.quick else 2
    paths = s.paths(n)
    blobs: list[bytes] = []

    def load() -> None:
        if not blobs:
            blobs.extend(limits.load_members(paths, "jpg"))

    def pipeline(lib: str) -> Any:
        return make_dataset(lib, paths).decode("rgb").to_tuple("jpg", "cls")

    variants = [Variant(lib, lib, _iterate(functools.partial(pipeline, lib))) for lib in _libs()]
    variants.append(
        Variant(
            "pil+float",
            "limit",
            lambda: {"samples": limits.pil_decode(blobs)},
            setup=load,
            note="bare PIL decode + float32/255 of the same JPEGs (in memory)",
        )
    )
    samples = s.samples // len(s.files) * n
    return Case(
        name="decode_rgb",
        title='decode("rgb") + to_tuple("jpg", "cls")',
        dataset="jpeg",
        variants=variants,
        samples=samples,
        nbytes=limits.file_size(paths),
        targets=[Target("cloudwds", "pil+float", 0.9, ">= 90% of bare PIL decode + float")],
        prepare=load,
    )


def pil_rgb8(blobs: list[bytes]) -> int:
    """Bare Pillow decode of in-memory JPEGs to uint8 H W C, as the issue states it."""
    import io

    import numpy as np
    from PIL import Image

    for data in blobs:
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return len(blobs)


def decode_rgb8_case(ctx: Context, shared: bool = False) -> Case:
    """``decode("rgb8")`` (libjpeg-turbo via simplejpeg) against bare Pillow on the same JPEGs.

    ``prepare`` checks, untimed, that every image the pipeline yields equals Pillow's decode of
    the same bytes; the cloudwds variant reports the outcome (``pixels_identical``) with each
    measurement, and an error in place of a time if they differ.

    ``decode_rgb8`` (the target) runs every measurement in a fresh process that loads only what
    its variant uses, after one untimed warm-up epoch there: as a user's loop runs. Bare
    Pillow's speed depends on the state of the process's allocator (in a process that did
    nothing else, glibc hands each image's buffers out as fresh ``mmap`` pages, ~145 minor page
    faults per 256x256 image; in a process whose heap has grown, from the heap): the
    ``decode_rgb8_shared`` case runs all variants in the benchmark process, one after the
    other, and shows that other mode.
    """
    s = ctx.sets["jpeg"]
    n = 1 if ctx.quick else 2
    paths = s.paths(n)
    blobs: list[bytes] = []
    checked: dict[str, Any] = {}
    check_file = os.path.join(ctx.workdir, "decode_rgb8_pixels.json")

    def load() -> None:
        if not blobs:
            blobs.extend(limits.load_members(paths, "jpg"))

    def pipeline(lib: str) -> Any:
        return make_dataset(lib, paths).decode("rgb8").to_tuple("jpg", "cls")

    def prepare() -> None:
        import io

        import numpy as np
        from PIL import Image

        from cloudwds.codecs.images import fast_jpeg_available

        load()
        count = 0
        same = True
        # One image at a time: holding 2,000 decoded images (400 MB) would also change the
        # allocator's state that the timed variants then run in.
        for (img, _cls), data in zip(pipeline("cloudwds"), blobs):
            ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            same = same and img.shape == ref.shape and bool(np.array_equal(img, ref))
            count += 1
        same = same and count == len(blobs)
        checked.update(pixels_identical=same, images=count, fast=fast_jpeg_available())
        with open(check_file, "w") as f:  # for the fresh processes
            json.dump(checked, f)

    def run_cloudwds() -> Result:
        if not checked and os.path.exists(check_file):
            with open(check_file) as f:
                checked.update(json.load(f))
        if checked.get("pixels_identical") is False:
            raise AssertionError(f"decode('rgb8') differs from bare Pillow: {checked}")
        return {
            "samples": consume(pipeline("cloudwds")),
            "pixels_identical": checked.get("pixels_identical"),
            "pixels_checked": checked.get("images"),
            "simplejpeg": checked.get("fast"),
        }

    variants = [
        Variant("cloudwds", "cloudwds", run_cloudwds),
        Variant("webdataset", "webdataset", _iterate(lambda: pipeline("webdataset"))),
        Variant(
            "pil-rgb8",
            "limit",
            lambda: {"samples": pil_rgb8(blobs)},
            setup=load,
            note="bare np.asarray(Image.open(BytesIO(b)).convert('RGB')) of the same JPEGs "
            "(in memory)",
        ),
    ]
    if not shared:
        # webdataset is measured in decode_rgb8_shared (and decode_rgb); here its fresh
        # processes would only lengthen the run
        variants = [v for v in variants if v.lib != "webdataset"]
        lit = litdata_variant(
            ctx, "litdata", False, s.samples // len(s.files) * n, n, decode=True, warmup=True
        )
        variants += [lit] if lit else []
    if shared:
        return Case(
            name="decode_rgb8_shared",
            title='decode("rgb8") + to_tuple vs bare Pillow, all in the benchmark process',
            dataset="jpeg",
            variants=variants,
            samples=s.samples // len(s.files) * n,
            nbytes=limits.file_size(paths),
            targets=[
                Target(
                    "cloudwds",
                    "pil-rgb8",
                    1.8,
                    ">= 1.8x bare Pillow, same process (Pillow on a grown heap; for reference)",
                )
            ],
            prepare=prepare,
            rss=False,
        )
    return Case(
        name="decode_rgb8",
        title='decode("rgb8") + to_tuple("jpg", "cls") vs bare Pillow (fresh process each)',
        dataset="jpeg",
        variants=variants,
        samples=s.samples // len(s.files) * n,
        nbytes=limits.file_size(paths),
        targets=[
            Target("cloudwds", "pil-rgb8", 1.8, ">= 1.8x bare Pillow decode, pixels identical")
        ],
        prepare=prepare,
        fresh_process=True,
        child_warmup=True,
        rss=False,
    )


def shuffle_case(ctx: Context) -> Case:
    s = ctx.sets["small"]
    paths = s.paths()

    def shuffled(lib: str) -> Any:
        return make_dataset(lib, paths).shuffle(1000)

    variants = [Variant(lib, lib, _iterate(functools.partial(shuffled, lib))) for lib in _libs()]
    return Case(
        name="shuffle",
        title="shuffle(1000), small shards",
        dataset="small",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
    )


def loader_case(ctx: Context) -> Case:
    s = ctx.sets["jpeg"]
    paths = s.paths()
    if len(paths) > 2:
        paths = paths[: len(paths) - len(paths) % 2]  # an even split over the 2 workers

    def loader(lib: str) -> Any:
        ds = make_dataset(lib, paths).decode("rgb").to_tuple("jpg", "cls").batched(64)
        import importlib

        m: Any = importlib.import_module(lib)  # cloudwds or webdataset
        return m.WebLoader(ds, num_workers=2, batch_size=None)

    def run(lib: str) -> Result:
        batches = samples = 0
        for images, _labels in loader(lib):
            batches += 1
            samples += len(images)
        return {"samples": samples, "batches": batches}

    variants = [Variant(lib, lib, functools.partial(run, lib)) for lib in _libs()]
    return Case(
        name="loader",
        title='WebLoader(2 workers): decode("rgb"), to_tuple, batched(64)',
        dataset="jpeg",
        variants=variants,
        samples=s.samples // len(s.files) * len(paths),
        nbytes=limits.file_size(paths),
    )


def _rgb8_pipeline(paths: list[str]) -> Any:
    return cwds_dataset(paths).decode("rgb8").to_tuple("jpg", "cls").batched(64)


def _epoch_count(it: Any) -> int:
    n = 0
    for images, _labels in it:
        n += len(images)
    return n


def _half_epoch(paths: list[str], conn: Any) -> None:
    conn.send(_epoch_count(_rgb8_pipeline(paths)))
    conn.close()


def _with_children_cpu(fn: Callable[[], int]) -> Result:
    """Run ``fn`` (an epoch); CPU time of this process plus its waited-for children."""
    import resource

    def cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    c0 = cpu()
    samples = fn()
    return {"samples": samples, "cpu_seconds": cpu() - c0}


def loader_ceiling_case(ctx: Context) -> Case:
    """DataLoader with 2 workers vs the machine's own ceiling for the same pipeline.

    The ceiling: two independent single-process copies of the pipeline, forked together over
    half the shards each (as the DataLoader forks its workers), timed until both are done.
    Every variant's ``cpu_seconds`` includes its child processes (workers, the two copies), so
    CPU per sample compares the loaders' workers with one process.
    """
    import multiprocessing as mp

    s = ctx.sets["jpeg"]
    paths = s.paths()
    paths = paths[: len(paths) - len(paths) % 2]  # an even split over 2 workers / 2 copies
    halves = [paths[0::2], paths[1::2]]
    per_shard = s.samples // len(s.files)

    def one_process() -> int:
        return _epoch_count(_rgb8_pipeline(paths))

    def ceiling() -> int:
        fork = mp.get_context("fork")
        pipes = [fork.Pipe(duplex=False) for _ in halves]
        procs = [
            fork.Process(target=_half_epoch, args=(half, w))
            for half, (_r, w) in zip(halves, pipes, strict=True)
        ]
        for p in procs:
            p.start()
        counts = [r.recv() for r, _w in pipes]
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"pipeline copy exited with {p.exitcode}")
        return int(sum(counts))

    def loader(shared: bool) -> int:
        import cloudwds

        return _epoch_count(
            cloudwds.WebLoader(
                _rgb8_pipeline(paths), num_workers=2, batch_size=None, shared_batches=shared
            )
        )

    variants = [
        Variant("one-process", "cloudwds", lambda: _with_children_cpu(one_process)),
        Variant("two-copies", "limit", lambda: _with_children_cpu(ceiling), note="the ceiling"),
        Variant(
            "loader",
            "cloudwds",
            lambda: _with_children_cpu(lambda: loader(False)),
            note="shared_batches=False: pickled batches",
        ),
        Variant(
            "loader-shm",
            "cloudwds",
            lambda: _with_children_cpu(lambda: loader(True)),
            note="shared batches (the default)",
        ),
    ]
    lit = litdata_variant(ctx, "litdata", False, len(paths) * per_shard, len(paths), loader=True)
    variants += [lit] if lit else []
    return Case(
        name="loader_ceiling",
        title='WebLoader(2 workers) vs the 2-core ceiling: decode("rgb8"), to_tuple, batched(64)',
        dataset="jpeg",
        variants=variants,
        samples=s.samples // len(s.files) * len(paths),
        nbytes=limits.file_size(paths),
        targets=[
            Target("loader-shm", "two-copies", 0.9, ">= 90% of two single-process copies"),
            Target("loader", "two-copies", 0.9, "(plain workers) >= 90% of two copies"),
        ],
        rss=False,
    )


def s3_stream_case(ctx: Context) -> Case:
    s = ctx.sets["jpeg"]
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    fs_holder: list[Any] = []

    def fs() -> Any:
        if not fs_holder:
            fs_holder.append(ctx.s3fs())
        return fs_holder[0]

    variants = [
        Variant("cloudwds", "cloudwds", _iterate(lambda: cwds_dataset(urls, storage_options=so))),
        Variant(
            "webdataset",
            "webdataset",
            _iterate(lambda: wds_dataset(pipe_urls(urls))),
            note="pipe:aws s3 cp",
        ),
        Variant(
            "fsspec-cat",
            "limit",
            lambda: {"bytes": limits.fsspec_cat(fs(), urls)},
            note="s3fs cat_file, one GET per object",
        ),
        Variant(
            "fsspec-stream",
            "limit",
            lambda: {"bytes": limits.fsspec_stream(fs(), urls)},
            note="s3fs open(block_size=8MiB) + read(1MiB)",
        ),
        Variant(
            "fsspec-ranges",
            "limit",
            lambda: {"bytes": limits.fsspec_ranges(fs(), urls)},
            note="s3fs info + sequential 8 MiB cat_file ranges",
        ),
    ]
    lit = litdata_variant(ctx, "litdata", True, s.samples)
    variants += [lit] if lit else []
    return Case(
        name="s3_stream",
        title="S3 (moto), raw iteration, no cache",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        targets=[Target("cloudwds", "fsspec-cat", 0.9, ">= 90% of raw fsspec read")],
        prepare=lambda: fs().ls(BUCKET),
    )


# A whole fresh interpreter per measurement, timed from just before it is started to the moment
# it holds the last sample (CLOCK_MONOTONIC is one clock for every process of the machine), so
# the interpreter start, every import and the first request count; interpreter teardown does not
# (``os._exit`` right after the clock, for every variant alike).
FRESH_HEAD = "import time as _t, os as _os\n"
FRESH_TAIL = "print('__fresh__', _t.monotonic(), n, flush=True)\n_os._exit(0)\n"


def fresh_script(kind: str, urls: list[str], so: dict[str, str]) -> str:
    """The ``python -c`` program of one ``s3_cold_fresh`` variant (``n`` = samples or bytes)."""
    if kind == "cloudwds":
        body = (
            "import cloudwds\n"
            f"ds = cloudwds.WebDataset({urls!r}, shardshuffle=False, cache_dir=False,"
            f" storage_options={so!r})\n"
            "n = 0\n"
            "for _ in ds:\n    n += 1\n"
        )
    elif kind == "fsspec-cat":
        body = (
            "import s3fs\n"
            f"fs = s3fs.S3FileSystem(**{so!r})\n"
            "n = 0\n"
            f"for u in {urls!r}:\n    n += len(fs.cat_file(u))\n"
        )
    elif kind == "python":
        body = "n = 0\n"
    else:
        raise ValueError(kind)
    return FRESH_HEAD + body + FRESH_TAIL


def fresh_env(workdir: str) -> dict[str, str]:
    """Environment of the fresh interpreters: bytecode cached, as after ``pip install``.

    A wheel install compiles every module to ``.pyc``; a development checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` (as on this machine) would instead recompile every cloudwds
    module from source in each new process (~0.1 s) while s3fs, in site-packages, loads its
    ``.pyc``. Here every variant writes and reads bytecode under one ``PYTHONPYCACHEPREFIX``
    (``bench/data/pycache``, kept between runs; never beside the sources), filled by an untimed
    warm-up run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(os.path.dirname(workdir), "pycache")
    return env


def run_fresh(
    script: str, env: dict[str, str] | None = None, python: str | None = None, timeout: float = 600
) -> Result:
    """Run ``script`` in a new interpreter; seconds from the start to its ``__fresh__`` line.

    A program that prints ``__start__ <monotonic> <process_time>`` is timed from there instead
    (its imports excluded), and its CPU from the process time it prints with ``__fresh__``.
    Otherwise ``cpu_seconds`` is the child's CPU time (``getrusage`` of waited-for children):
    the imports and every thread of the child, nothing of this process.
    """
    import resource
    import subprocess
    import sys

    def kids() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    c0 = kids()
    t0 = time.monotonic()
    proc = subprocess.run(
        [python or sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("__fresh__ ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"fresh process exited {proc.returncode}: {tail}"[:500])
    _tag, t_end, n, *cpu_end = lines[-1].split()
    cpu = kids() - c0
    # a program that times only its epoch (imports excluded) says when it started, and its
    # process CPU time (all threads) then and at the end
    starts = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("__start__ ")]
    start = float(starts[-1][1]) if starts else t0
    if starts and len(starts[-1]) > 2 and cpu_end:
        cpu = float(cpu_end[0]) - float(starts[-1][2])
    return {"seconds": float(t_end) - start, "cpu_seconds": cpu, "count": int(n)}


def litdata_variant(
    ctx: Context,
    name: str,
    remote: bool,
    expect: int,
    shards: int | None = None,
    decode: bool = False,
    imports_timed: bool = False,
    warmup: bool = False,
    loader: bool = False,
) -> Variant | None:
    """A litdata variant (in its own venv, see :mod:`bench.others`), or None if not installed.

    The data is litdata's own conversion of the same jpeg shards (``others.convert``, once,
    untimed; its time goes into the results as ``convert_seconds``); from S3 it is uploaded to
    the same bucket. litdata always reads through its chunk cache: every run starts with an
    empty one (a cold epoch).
    """
    from . import others

    if not others.available("litdata"):
        return None
    paths = ctx.sets["jpeg"].paths(shards)
    local = others.litdata_dir(paths)
    cache = os.path.join(ctx.workdir, "litdata-cache", name)
    state: dict[str, Any] = {}
    env = fresh_env(ctx.workdir)

    def setup() -> None:
        if "script" in state:
            return
        record = others.convert(paths, local)
        state["convert_seconds"] = record["seconds"]
        source = others.upload(ctx.s3fs(), local, BUCKET) if remote else local
        state["script"] = others.litdata_script(
            source,
            cache,
            ctx.storage_options if remote else None,
            decode=decode,
            imports_timed=imports_timed,
            warmup=warmup,
            loader=loader,
        )

    def run() -> Result:
        setup()
        out = run_fresh(state["script"], env, python=others.PYTHON)
        n = out.pop("count")
        if n != expect:
            raise RuntimeError(f"litdata gave {n} samples, expected {expect}")
        return {"samples": n, "convert_seconds": state["convert_seconds"], **out}

    note = "litdata.StreamingDataset, own conversion, empty chunk cache"
    note += ", python -c timed from its start" if imports_timed else ", imports not timed"
    if decode:
        note += ", Pillow decode as bare pil-rgb8"
    if loader:
        note += ", StreamingDataLoader(batch_size=64, num_workers=2), Pillow rgb8 transform"
    return Variant(name, "litdata", run, setup=setup, note=note, own_process=True)


def s3_cold_fresh_case(ctx: Context) -> Case:
    """A cold S3 epoch in a fresh process, imports included, vs ``cat_file`` in a fresh process.

    Same objects as ``s3_stream``; no cache. Every measurement is a new ``python -c`` (see
    :func:`run_fresh`); the ``python`` variant is the interpreter's own start, the floor both
    pay. ``measure`` times the ``subprocess.run`` (startup and teardown of the child included);
    the ``seconds`` each run reports replace that with start → last sample.
    """
    s = ctx.sets["jpeg"]
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    env = fresh_env(ctx.workdir)
    scripts: dict[str, str] = {}

    def variant(name: str, lib: str, kind: str, note: str) -> Variant:
        scripts[name] = fresh_script(kind, urls, so)

        def run() -> Result:
            out = run_fresh(scripts[name], env)
            n = out.pop("count")
            if kind == "cloudwds" and n != s.samples:
                raise RuntimeError(f"{n} samples, expected {s.samples}")
            if kind == "fsspec-cat":
                return {"bytes": n, **out}
            return {"samples": n if kind == "cloudwds" else 0, "bytes": 0, **out}

        return Variant(name, lib, run, note=note)

    def prepare() -> None:
        for script in scripts.values():  # untimed: writes the bytecode every variant then reads
            run_fresh(script, env)
        if lit is not None:
            lit.run()

    variants = [
        variant("cloudwds", "cloudwds", "cloudwds", "python -c: import, WebDataset, epoch"),
        variant("fsspec-cat", "limit", "fsspec-cat", "python -c: import s3fs, cat_file each"),
        variant("python", "limit", "python", "python -c with no work: the interpreter's start"),
    ]
    lit = litdata_variant(ctx, "litdata", True, s.samples, imports_timed=True)
    variants += [lit] if lit else []
    return Case(
        name="s3_cold_fresh",
        title="S3 (moto), cold epoch in a fresh process, imports included",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        targets=[Target("cloudwds", "fsspec-cat", 0.9, ">= 90% of fsspec cat_file, fresh process")],
        prepare=prepare,
        rss=False,
    )


def _fresh_dir(root: str, holder: list[str]) -> Callable[[], None]:
    def setup() -> None:
        for old in holder:
            shutil.rmtree(old, ignore_errors=True)
        holder.clear()
        path = os.path.join(root, uuid.uuid4().hex[:12])
        os.makedirs(path)
        holder.append(path)

    return setup


def s3_cold_case(ctx: Context) -> Case:
    s = ctx.sets["jpeg"]
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    root = os.path.join(ctx.workdir, "cold")
    cw: list[str] = []
    ww: list[str] = []
    variants = [
        Variant(
            "cloudwds",
            "cloudwds",
            _iterate(lambda: cwds_dataset(urls, storage_options=so, cache_dir=cw[0])),
            setup=_fresh_dir(os.path.join(root, "cloudwds"), cw),
            note="empty cache_dir",
        ),
        Variant(
            "webdataset",
            "webdataset",
            _iterate(lambda: wds_dataset(pipe_urls(urls), cache_dir=ww[0])),
            setup=_fresh_dir(os.path.join(root, "webdataset"), ww),
            note="pipe:aws s3 cp, empty cache_dir",
        ),
    ]
    return Case(
        name="s3_cold_cache",
        title="S3 (moto), first epoch into an empty cache",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
    )


def s3_warm_case(ctx: Context) -> Case:
    s = ctx.sets["jpeg"]
    paths = s.paths()
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    cdir = os.path.join(ctx.workdir, "warm", "cloudwds")
    wdir = os.path.join(ctx.workdir, "warm", "webdataset")

    def cw() -> Any:
        return cwds_dataset(urls, storage_options=so, cache_dir=cdir)

    def ww() -> Any:
        return wds_dataset(pipe_urls(urls), cache_dir=wdir)

    def prepare() -> None:
        limits.cat_files(paths)
        for d, factory in ((cdir, cw), (wdir, ww)):
            os.makedirs(d, exist_ok=True)
            try:
                consume(factory())  # the cold epoch that fills the cache
            except Exception:  # noqa: BLE001 - any failure: the timed runs record the error
                pass

    variants = [
        Variant("cloudwds", "cloudwds", _iterate(cw), note="warm cache_dir"),
        Variant("webdataset", "webdataset", _iterate(ww), note="warm cache_dir"),
        Variant("cloudwds-local", "cloudwds", _iterate(lambda: cwds_dataset(paths))),
        Variant("webdataset-local", "webdataset", _iterate(lambda: wds_dataset(paths))),
    ]
    return Case(
        name="s3_warm_cache",
        title="S3 (moto), epoch from a warm cache (vs the same files local)",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        targets=[Target("cloudwds", "cloudwds-local", 0.9, ">= 90% of local-file epoch")],
        prepare=prepare,
    )


def ttfs_case(ctx: Context) -> Case:
    """Time to first sample from the bucket, in a fresh process per measurement.

    Timed: constructing the dataset, ``iter`` and the first ``next`` (imports of the library
    and of s3fs are done before the clock starts; webdataset's ``aws`` CLI start is included,
    it is part of that method).
    """
    s = ctx.sets["ttfs"]
    small, big = ctx.s3_urls("ttfs")
    mid = ctx.s3_urls("jpeg", 1)[0]
    so = ctx.storage_options

    def first(lib: str, url: str) -> Callable[[], Result]:
        def run() -> Result:
            if lib == "cloudwds":
                ds = cwds_dataset([url], storage_options=so)
            else:
                ds = wds_dataset(pipe_urls([url]))
            it = iter(ds)
            sample = next(it)
            return {"samples": 1, "first_key": sample["__key__"]}

        return run

    def first_range(url: str) -> Callable[[], Result]:
        def run() -> Result:
            import s3fs

            fs = s3fs.S3FileSystem(skip_instance_cache=True, **so)
            return {"bytes": len(fs.cat_file(url, start=0, end=1 << 20))}

        return run

    # webdataset's mid-size point (each costs an ``aws`` CLI start) is left out, and --quick
    # leaves out every mid-size point, to keep the number of fresh processes down.
    shards = (
        (("small", small), ("big", big))
        if ctx.quick
        else (("small", small), ("mid", mid), ("big", big))
    )
    variants = [
        Variant(f"{lib}-{size}", lib, first(lib, url))
        for lib in _libs()
        for size, url in shards
        if not (lib == "webdataset" and size == "mid")
    ]
    variants += [
        Variant(
            f"fsspec-{size}",
            "limit",
            first_range(url),
            note="new S3FileSystem + cat_file of the first 1 MiB",
        )
        for size, url in shards
    ]
    sizes = [os.path.getsize(p) for p in s.files]
    return Case(
        name="ttfs",
        title="time to first sample from S3 (fresh process)",
        dataset="ttfs",
        variants=variants,
        samples=1,
        nbytes=0,
        targets=[
            # moto's time to first byte grows with the object's size even for a 1 MiB range
            # (it copies the whole object per GET), so the library's own part is the ratio
            # measured against the endpoint's floor on the same two objects.
            Target(
                f"{lib}-small",
                f"{lib}-big",
                1.25,
                f"{lib}: big-shard / small-shard time, relative to the endpoint's floor "
                f"(fsspec big / small), <= 1.25 ({sizes[0] / 1e6:.1f} MB vs "
                f"{sizes[1] / 1e6:.0f} MB)",
                kind="time_ratio_max",
                ref_num="fsspec-small",
                ref_den="fsspec-big",
            )
            for lib in ("cloudwds",)
        ],
        fresh_process=True,
        rss=False,
    )


def rss_case(ctx: Context) -> Case:
    """Peak RSS of one raw epoch, each configuration in a fresh process (flat = good)."""
    sets = ctx.sets
    # (name, urls, remote, through a fresh cache_dir)
    configs: list[tuple[str, list[str], bool, bool]] = []
    for name in ("small", "large", "jpeg"):
        paths = sets[name].paths()
        configs.append((f"{name}x1", paths[:1], False, False))
        if len(paths) > 1 and name != "jpeg":
            configs.append((f"{name}x{len(paths)}", paths, False, False))
    t = sets["ttfs"].paths()
    configs.append(("ttfs-big", t[1:], False, False))
    if ctx.endpoint:
        s3j = ctx.s3_urls("jpeg")
        s3t = ctx.s3_urls("ttfs")
        counts = sorted({1, 2, len(s3j)} if len(s3j) > 1 else {1})
        configs.append(("s3-ttfs-small", s3t[:1], True, False))
        for k in counts:
            configs.append((f"s3-jpegx{k}", s3j[:k], True, False))
        configs.append(("s3-ttfs-big", s3t[1:], True, False))
        for k in counts:
            configs.append((f"s3-cold-cache-jpegx{k}", s3j[:k], True, True))
        configs.append(("s3-cold-cache-ttfs-big", s3t[1:], True, True))
    so = ctx.storage_options if ctx.endpoint else None

    def run(lib: str, urls: list[str], remote: bool, cached: bool) -> Callable[[], Result]:
        def f() -> Result:
            kw: dict[str, Any] = {}
            if cached:
                kw["cache_dir"] = os.path.join(ctx.workdir, "rss-cache", uuid.uuid4().hex[:12])
                os.makedirs(kw["cache_dir"])
            if lib == "cloudwds":
                if remote:
                    kw["storage_options"] = so
                ds = cwds_dataset(urls, **kw)
            else:
                ds = wds_dataset(pipe_urls(urls) if remote else urls, **kw)
            return {"samples": consume(ds)}

        return f

    # --quick: cloudwds only (the target is about cloudwds; webdataset is the reference)
    libs = ("cloudwds",) if ctx.quick else _libs()
    variants = [
        Variant(f"{lib}:{cname}", lib, run(lib, urls, remote, cached))
        for cname, urls, remote, cached in configs
        for lib in libs
    ]
    return Case(
        name="rss",
        title="peak RSS of one raw epoch vs number and size of shards (fresh process each)",
        dataset="small,large,ttfs",
        variants=variants,
        samples=0,
        nbytes=0,
        fresh_process=True,
        rss=False,
    )


def _indexed_prepare(ctx: Context, name: str) -> Callable[[], None]:
    """Untimed: write the ``.idx`` offsets next to the local shards and beside the S3 copies."""

    def prepare() -> None:
        from cloudwds.index import build_index

        paths = ctx.sets[name].paths()
        build_index(paths, offsets=True, checksum=None)
        fs = ctx.s3fs()
        for p in paths:
            idx = p[: -len(".tar")] + ".idx"
            fs.put_file(idx, f"{BUCKET}/{s3_key(idx)}")

    return prepare


def _random_epoch(
    factory: Callable[[], Any], limit: int | None, seed: int = 0
) -> Callable[[], Result]:
    """One epoch in a random order (``limit``: only the first indices of that order), one
    ``ds[i]`` per sample. The dataset is built once, before the first measurement, as a
    training job builds it once for all its epochs (loading the offsets is not an epoch's
    cost). Reports the bytes read, ``read_ratio`` = bytes read / bytes of the samples' members,
    and ``requests`` = reads issued (remote GETs without a cache)."""
    import random

    holder: list[Any] = []

    def run() -> Result:
        if not holder:
            holder.append(factory())
        ds = holder[0]
        order = list(range(len(ds)))
        random.Random(seed).shuffle(order)
        order = order[:limit] if limit else order
        needed = 0
        before, requests = ds.reader.bytes_read, ds.reader.requests
        for i in order:
            ds[i]
            shard, number = ds.locate(i)
            table = ds.tables[shard]
            needed += sum(table.sizes[m] for m in table.members(number))
        read = ds.reader.bytes_read - before
        return {
            "samples": len(order),
            "bytes": read,
            "read_ratio": round(read / needed, 4) if needed else 0.0,
            "requests": ds.reader.requests - requests,
        }

    return run


def indexed_warm_case(ctx: Context) -> Case:
    """Random-order epoch of IndexedWebDataset over a warm cache vs a sequential local epoch."""
    s = ctx.sets["jpeg"]
    paths = s.paths()
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    cdir = os.path.join(ctx.workdir, "indexed-warm")
    fill = _indexed_prepare(ctx, "jpeg")

    def indexed() -> Any:
        import cloudwds

        return cloudwds.IndexedWebDataset(urls, storage_options=so, cache_dir=cdir)

    def local() -> Any:
        import cloudwds

        return cloudwds.IndexedWebDataset(paths)

    def prepare() -> None:
        fill()
        limits.cat_files(paths)
        ds = indexed()
        consume(ds[i] for i in range(len(ds)))  # the epoch that fills the cache
        ds.close()

    variants = [
        Variant(
            "cloudwds-random-warm",
            "cloudwds",
            _random_epoch(indexed, None),
            note="ds[i], shuffled, warm cache_dir",
        ),
        Variant(
            "cloudwds-sequential-local",
            "cloudwds",
            _iterate(lambda: cwds_dataset(paths)),
            note="WebDataset over the same files, local",
        ),
        Variant(
            "cloudwds-random-local",
            "cloudwds",
            _random_epoch(local, None),
            note="ds[i], shuffled, local files",
        ),
    ]
    return Case(
        name="indexed_warm",
        title="random access: shuffled ds[i] epoch over a warm cache vs sequential local epoch",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        targets=[
            Target(
                "cloudwds-random-warm",
                "cloudwds-sequential-local",
                0.5,
                ">= 50% of a sequential local epoch",
            )
        ],
        prepare=prepare,
    )


INDEXED_S3_SAMPLES = 400  # one GET each on moto: a subset keeps a measurement to seconds


def indexed_s3_case(ctx: Context) -> Case:
    """Random-order samples straight from S3 (no cache): samples/s and bytes read / needed."""
    urls = ctx.s3_urls("jpeg")
    so = ctx.storage_options
    n = min(INDEXED_S3_SAMPLES, ctx.sets["jpeg"].samples)

    def indexed() -> Any:
        import cloudwds

        return cloudwds.IndexedWebDataset(urls, storage_options=so)

    variants = [
        Variant(
            "cloudwds-random-s3",
            "cloudwds",
            _random_epoch(indexed, n),
            note=f"{n} shuffled ds[i], one ranged GET each (read_ratio: bytes read / needed)",
        ),
    ]
    return Case(
        name="indexed_s3",
        title=f"random access from S3 (moto), no cache: {n} shuffled samples",
        dataset="jpeg",
        variants=variants,
        samples=n,
        nbytes=0,
        prepare=_indexed_prepare(ctx, "jpeg"),
    )


def index_build_case(ctx: Context) -> Case:
    """``cloudwds index`` with offsets vs without vs ``cloudwds verify``: one full read each."""
    s = ctx.sets["jpeg"]
    paths = s.paths()

    def index(offsets: bool) -> Callable[[], Result]:
        def run() -> Result:
            from cloudwds.index import build_index

            manifest = build_index(paths, offsets=offsets, workers=2)
            return {"samples": manifest.total_samples, "bytes": manifest.total_bytes}

        return run

    def verify() -> Result:
        import contextlib
        import io

        from cloudwds.cli import main

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["-q", "verify", *paths, "--workers", "2"])
        if code:
            raise RuntimeError(f"cloudwds verify exited {code}")
        return {"samples": s.samples}

    variants = [
        Variant(
            "index+offsets", "cloudwds", index(True), note="build_index(offsets=True), 2 threads"
        ),
        Variant("index", "cloudwds", index(False), note="build_index(), 2 threads"),
        Variant("verify", "cloudwds", verify, note="cloudwds verify --workers 2"),
    ]
    return Case(
        name="index_build",
        title="index build (sha256 + offsets files) vs cloudwds verify, local jpeg shards",
        dataset="jpeg",
        variants=variants,
        samples=s.samples,
        nbytes=s.nbytes,
        prepare=lambda: limits.cat_files(paths),
    )


CASE_NAMES = (
    "raw_small",
    "raw_jpeg",
    "raw_large",
    "decode_rgb",
    "decode_rgb8",
    "decode_rgb8_shared",
    "shuffle",
    "loader",
    "loader_ceiling",
    "s3_stream",
    "s3_cold_fresh",
    "s3_cold_cache",
    "s3_warm_cache",
    "ttfs",
    "rss",
    "indexed_warm",
    "indexed_s3",
    "index_build",
)
S3_CASES = {
    "s3_stream",
    "s3_cold_fresh",
    "s3_cold_cache",
    "s3_warm_cache",
    "ttfs",
    "indexed_warm",
    "indexed_s3",
}


def build_case(ctx: Context, name: str) -> Case:
    builders: dict[str, Callable[[], Case]] = {
        "raw_small": lambda: raw_case(ctx, "small", 5.0),
        "raw_jpeg": lambda: raw_case(ctx, "jpeg", 3.0),
        "raw_large": lambda: raw_case(ctx, "large", 3.0),
        "decode_rgb": lambda: decode_case(ctx),
        "decode_rgb8": lambda: decode_rgb8_case(ctx),
        "decode_rgb8_shared": lambda: decode_rgb8_case(ctx, shared=True),
        "shuffle": lambda: shuffle_case(ctx),
        "loader": lambda: loader_case(ctx),
        "loader_ceiling": lambda: loader_ceiling_case(ctx),
        "s3_stream": lambda: s3_stream_case(ctx),
        "s3_cold_fresh": lambda: s3_cold_fresh_case(ctx),
        "s3_cold_cache": lambda: s3_cold_case(ctx),
        "s3_warm_cache": lambda: s3_warm_case(ctx),
        "ttfs": lambda: ttfs_case(ctx),
        "rss": lambda: rss_case(ctx),
        "indexed_warm": lambda: indexed_warm_case(ctx),
        "indexed_s3": lambda: indexed_s3_case(ctx),
        "index_build": lambda: index_build_case(ctx),
    }
    return builders[name]()


def measure(variant: Variant, min_time: float = 0.0) -> Result:
    """One timed measurement of ``variant``; errors are returned, not raised.

    ``setup`` is untimed. With ``min_time``, a run shorter than that is repeated (setup again
    before each run) until the timed total reaches it, and the time per run is reported, so very
    fast variants are not lost in timer and scheduling noise. ``cpu_seconds`` is the CPU time of
    this process (all its threads, not child processes) over the same runs: for single-process
    cases it is much less sensitive to other load on the machine than wall time.

    A run that times itself returns ``seconds`` (and ``cpu_seconds``) in its result, and those
    are used instead of the clock around the call: ``s3_cold_fresh`` times a child interpreter
    from its start to its last sample, ``loader_ceiling`` counts its children's CPU.
    """
    import gc

    total = cpu = 0.0
    runs = 0
    out: Result = {}
    try:
        gc.collect()
        while True:
            if variant.setup is not None:
                variant.setup()
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = variant.run()
            # a run may time itself (e.g. start -> last sample of a child process) and say so
            total += out.pop("seconds", time.perf_counter() - t0)
            cpu += out.pop("cpu_seconds", time.process_time() - c0)
            runs += 1
            if total >= min_time:
                break
    except Exception as exn:  # noqa: BLE001 - recorded in the results; the suite carries on
        return {"error": f"{type(exn).__name__}: {exn}"[:500]}
    return {"seconds": total / runs, "cpu_seconds": cpu / runs, "runs": runs, **out}
