"""litdata (and mosaic-streaming, when it can be imported) on the same samples as cloudwds.

They need torch and pull an unpinned torchvision, so they live in their own virtual environment,
never in the one the benchmark runs in: ``~/.cache/cloudwds-bench/venv`` (or
``$CLOUDWDS_BENCH_VENV``), made with::

    python -m venv --system-site-packages ~/.cache/cloudwds-bench/venv
    echo "torch==2.13.0" > /tmp/c.txt
    ~/.cache/cloudwds-bench/venv/bin/pip install -c /tmp/c.txt litdata mosaicml-streaming

Every variant runs as a ``python -c`` program in that environment (see
:func:`bench.cases.run_fresh`): either timed from the process start (imports included, as in
``s3_cold_fresh``) or from just after its imports (``__start__``), as the in-process variants of
the other libraries are. The data is converted once with litdata's own writer
(``litdata.optimize``) from the same tar shards, in the same sample order, ``jpg`` kept as the
encoded bytes and ``cls`` as an int; the conversion time is recorded (never part of a timing).

mosaic-streaming 0.13.0 is not measured: ``import streaming`` imports ``streaming.vision``,
which imports torchvision, and the only torchvision for torch 2.13 on the package index
(0.28.0) is the CUDA build, whose ``_C.so`` needs ``libtorch_cuda.so`` and fails to load beside
the CPU torch (``RuntimeError: operator torchvision::nms does not exist``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from typing import Any

VENV = os.environ.get(
    "CLOUDWDS_BENCH_VENV", os.path.join(os.path.expanduser("~"), ".cache", "cloudwds-bench", "venv")
)
PYTHON = os.path.join(VENV, "bin", "python")

_available: dict[tuple[str, bool], bool] = {}


def available(module: str = "litdata", load: bool = False) -> bool:
    """Whether ``module`` is installed in the venv (``load``: and imports; checked once).

    Without ``load`` only its files are looked up (``find_spec``): every benchmark child
    process asks, and importing litdata means importing torch (seconds).
    """
    if (module, load) not in _available:
        ok = os.path.exists(PYTHON)
        if ok:
            code = (
                f"import {module}"
                if load
                else f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
            )
            proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
            ok = proc.returncode == 0
        _available[module, load] = ok
    return _available[module, load]


def version(package: str) -> str:
    """``package``'s version in the venv, or ``-`` when it (or the venv) is missing."""
    if not os.path.exists(PYTHON):
        return "-"
    code = f"from importlib.metadata import version; print(version({package!r}))"
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else "-"


CONVERT = """
import json, sys, tarfile, time
from litdata import optimize

paths, out = json.loads(sys.argv[1]), sys.argv[2]

def samples(path):
    # the tar members in order, grouped by key as a WebDataset reader groups them
    current, sample = None, {}
    with tarfile.open(path) as tf:
        for m in tf:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key != current and sample:
                yield {"jpg": sample["jpg"], "cls": int(sample["cls"])}
                sample = {}
            current = key
            sample[ext] = tf.extractfile(m).read()
    if sample:
        yield {"jpg": sample["jpg"], "cls": int(sample["cls"])}

if __name__ == "__main__":
    t0 = time.perf_counter()
    optimize(fn=samples, inputs=paths, output_dir=out, chunk_bytes="32MB", num_workers=1,
             reorder_files=False, mode="overwrite", verbose=False)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def convert(paths: list[str], out_dir: str) -> dict[str, Any]:
    """Write ``paths``' samples with ``litdata.optimize`` into ``out_dir`` once; its record.

    The record (``litdata-convert.json`` beside the data: seconds, samples' shards) is reused
    while the shard list is the same.
    """
    record_path = out_dir.rstrip("/") + "-convert.json"
    if os.path.exists(record_path) and os.path.exists(os.path.join(out_dir, "index.json")):
        with open(record_path) as f:
            record: dict[str, Any] = json.load(f)
        if record.get("paths") == paths:
            return record
    with tempfile.TemporaryDirectory(prefix="cloudwds-bench-") as tmp:
        script = os.path.join(tmp, "litdata_convert.py")
        with open(script, "w") as f:
            f.write(CONVERT)  # a file, not -c: optimize's workers re-import the main module
        proc = subprocess.run(
            [PYTHON, script, json.dumps(paths), out_dir],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"litdata.optimize failed ({proc.returncode}): {tail}"[:500])
    record = {"seconds": json.loads(lines[-1])["seconds"], "paths": paths, "at": time.time()}
    with open(record_path, "w") as f:
        json.dump(record, f)
    return record


def litdata_script(
    input_dir: str,
    cache_dir: str,
    storage_options: dict[str, str] | None = None,
    decode: bool = False,
    imports_timed: bool = False,
    warmup: bool = False,
    loader: bool = False,
) -> str:
    """``python -c`` program: one litdata epoch, ``n`` = samples.

    ``decode``: each ``jpg`` to uint8 H W C with bare Pillow (litdata keeps what was written:
    the encoded bytes). ``imports_timed``: the clock is the process start (no ``__start__``
    line), else it starts after the imports (CPU then: user + system of the process and its
    waited-for children, from ``os.times``). ``warmup``: one untimed epoch first. ``loader``:
    ``StreamingDataLoader(batch_size=64, num_workers=2)`` over the dataset with a per-sample
    transform decoding ``jpg`` as bare Pillow does (uint8 H W C) and keeping ``cls``; ``n``
    counts the samples of every batch, worker start included.
    """
    opts = ""
    if storage_options:
        boto = {
            "endpoint_url": storage_options["endpoint_url"],
            "aws_access_key_id": storage_options["key"],
            "aws_secret_access_key": storage_options["secret"],
        }
        opts = f", storage_options={boto!r}"
    use = (
        "    np.asarray(Image.open(io.BytesIO(s['jpg'])).convert('RGB'))\n"
        if decode
        else "    pass\n"
    )
    lines = [
        "import time as _t, os as _os, io, shutil",
        "import litdata",
    ]
    if loader:
        lines += [
            "import numpy as np",
            "from PIL import Image",
            "def rgb8(s):",
            "    return np.asarray(Image.open(io.BytesIO(s['jpg'])).convert('RGB')), s['cls']",
        ]
    if storage_options and storage_options["endpoint_url"].startswith("http://"):
        # litdata's S3 downloads go through obstore, which refuses plain http unless told; the
        # loopback endpoint is http (a real S3 endpoint is https and needs none of this)
        lines.append(
            "import litdata.streaming.downloader as _dl; "
            "_dl._OBSTORE_CLIENT_OPTIONS['allow_http'] = 'true'"
        )
    if decode:
        lines += ["import numpy as np", "from PIL import Image"]
    lines += [
        "def epoch(cache):",
        "    shutil.rmtree(cache, ignore_errors=True)",
        f"    ds = litdata.StreamingDataset({input_dir!r}, cache_dir=cache{opts}"
        + (", transform=rgb8)" if loader else ")"),
        "    n = 0",
    ]
    if loader:
        lines += [
            "    for images, _labels in litdata.StreamingDataLoader(ds, batch_size=64, "
            "num_workers=2):",
            "        n += len(images)",
        ]
    else:
        lines += ["    for s in ds:", "    " + use.rstrip("\n"), "        n += 1"]
    lines.append("    return n")
    if warmup:
        lines.append(f"epoch({cache_dir!r} + '-warm')")
    if not imports_timed:
        lines.append("print('__start__', _t.monotonic(), sum(_os.times()[:4]), flush=True)")
    lines.append(f"n = epoch({cache_dir!r})")
    lines.append("print('__fresh__', _t.monotonic(), n, sum(_os.times()[:4]), flush=True)")
    lines.append(f"shutil.rmtree({cache_dir!r}, ignore_errors=True)")
    lines.append(f"shutil.rmtree({cache_dir!r} + '-warm', ignore_errors=True)")
    lines.append("_os._exit(0)")
    return "\n".join(lines) + "\n"


def litdata_dir(jpeg_paths: list[str]) -> str:
    """Where the litdata copy of these jpeg shards is written (beside their directory)."""
    root = os.path.dirname(os.path.dirname(jpeg_paths[0]))
    return os.path.join(root, f"litdata-jpeg-{len(jpeg_paths)}")


def upload(fs: Any, local_dir: str, bucket: str) -> str:
    """Put the converted files into ``bucket`` (once per endpoint); the ``s3://`` input dir."""
    prefix = f"{bucket}/{os.path.basename(local_dir)}"
    for name in sorted(os.listdir(local_dir)):
        if not fs.exists(f"{prefix}/{name}"):
            fs.put_file(os.path.join(local_dir, name), f"{prefix}/{name}")
    return f"s3://{prefix}"
