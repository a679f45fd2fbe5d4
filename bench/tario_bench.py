"""Micro-benchmark: cloudwds's streaming tar reader against Python's ``tarfile`` on the same files.

Usage: ``python bench/tario_bench.py [--dir bench/data/tario] [--repeat 5]``

Three deterministic shard kinds (generated once): small records (~100-byte txt + cls, 20,000
samples), medium members (~30 KB, like 256x256 JPEGs), and large 4 MB members. Each reader reads
every member's bytes; files are page-cached after the first pass. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import time

import numpy as np

from cloudwds.tario import iter_members


def make_shard(path: str, kind: str) -> int:
    rng = np.random.default_rng(0)
    if os.path.exists(path):
        with tarfile.open(path) as t:
            return sum(1 for m in t if m.isfile())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    spec = {
        "small": (10000, [("txt", 100), ("cls", 2)]),
        "medium": (2000, [("jpg", 30000), ("cls", 2)]),
        "large": (100, [("npy", 4 << 20)]),
    }
    n, fields = spec[kind]
    count = 0
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(n):
            for ext, size in fields:
                data = rng.bytes(size)
                info = tarfile.TarInfo(f"sample{i:06d}.{ext}")
                info.size = size
                t.addfile(info, io.BytesIO(data))
                count += 1
    os.replace(tmp, path)
    return count


def read_cloudwds(path: str) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        for _, data in iter_members(f, path):
            total += len(data)
    return total


def read_tarfile(path: str) -> int:
    total = 0
    with tarfile.open(path, "r|") as t:
        for m in t:
            if m.isfile():
                f = t.extractfile(m)
                assert f is not None
                total += len(f.read())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="bench/data/tario")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = []
    for kind in ("small", "medium", "large"):
        path = os.path.join(args.dir, f"{kind}.tar")
        members = make_shard(path, kind)
        size = os.path.getsize(path)
        times: dict[str, list[float]] = {"cloudwds": [], "tarfile": []}
        for _ in range(args.repeat):
            for name, fn in (("cloudwds", read_cloudwds), ("tarfile", read_tarfile)):
                t0 = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "kind": kind,
            "members": members,
            "mbytes": round(size / 1e6, 1),
            "cloudwds_members_per_s": round(members / med["cloudwds"]),
            "tarfile_members_per_s": round(members / med["tarfile"]),
            "cloudwds_MB_per_s": round(size / 1e6 / med["cloudwds"]),
            "tarfile_MB_per_s": round(size / 1e6 / med["tarfile"]),
            "speedup": round(med["tarfile"] / med["cloudwds"], 2),
        }
        results.append(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
