"""The seeded tar mutants of ``tests/test_tario_fuzz.py`` through webdataset and cloudwds, side by side.

Usage: ``python bench/fuzz_compare.py [--seed N] [--memory-gib 4] [--time-limit 5]``

Not a speed benchmark and not run in CI: it counts, per library, how ``WebDataset(url)`` ends
on each mutant (damaged headers, huge and negative sizes, garbage numbers, malformed pax and
GNU records, truncation, zero blocks mid-archive, corrupt gzip), each library in its own child
process under an address-space limit (``RLIMIT_AS``) with a time limit per mutant:

- ``hangs``: still running at the time limit (both readers normally take milliseconds);
- ``memory errors``: ``MemoryError`` (also wrapped in cloudwds's generic ``ShardError``);
- ``untyped errors``: an error that is not the library's tar-error type (for webdataset anything
  but a ``tarfile.TarError``; for cloudwds anything but a ``ShardError`` subclass, or a built-in
  error wrapped in the bare ``ShardError`` the source stage uses for unexpected errors);
- ``errors naming the member``: the error says which tar member (cloudwds: ``exn.member`` is
  set; webdataset: a member name of the shard appears in the error);
- ``silent loss``: a mutant that must fail (cut short, or a zero block before a member) but
  ended without an error, i.e. members were dropped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import test_tario_fuzz as fuzz  # type: ignore[import-not-found]  # noqa: E402  (the mutant generator lives with the test)


def _samples(lib: str, path: str) -> int:
    if lib == "webdataset":
        import webdataset  # type: ignore[import-untyped]

        ds = webdataset.WebDataset(path, shardshuffle=False)
    else:
        import cloudwds

        ds = cloudwds.WebDataset(path, shardshuffle=False, empty_check=False)
    return sum(1 for _ in ds)


def _typed(lib: str) -> tuple[type, ...]:
    if lib == "webdataset":
        import tarfile

        return (tarfile.TarError,)
    from cloudwds.errors import ShardError

    return (ShardError,)


def _names_member(lib: str, exn: BaseException, names: list[str]) -> bool:
    if lib == "cloudwds":
        return bool(getattr(exn, "member", None))
    text = " ".join(str(a) for a in exn.args) + " " + str(exn)
    keys = {n.split("/")[-1].split(".")[0] for n in names}
    return any(n in text for n in names) or any(k and k in text for k in keys)


def child(lib: str, directory: str, out: str, memory: int, time_limit: float) -> None:
    """Read every mutant of ``directory`` with ``lib``; write one outcome per mutant to ``out``."""
    _samples(lib, os.path.join(directory, "m0000-writer-valid.tar"))  # imports, warm-up
    typed = _typed(lib)
    signal.signal(signal.SIGALRM, fuzz._on_alarm)
    fuzz.limit_memory(memory)
    with open(os.path.join(directory, "mutants.json")) as f:
        mutants = json.load(f)
    results: list[dict[str, Any]] = []
    for m in mutants:
        path = os.path.join(directory, m["file"])
        result: dict[str, Any] = {"file": m["file"]}
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            result["samples"] = _samples(lib, path)
            result["status"] = "ok"
        except fuzz.Hang:
            result["status"] = "hang"
        except MemoryError:
            result["status"] = "memory"
        except Exception as exn:  # noqa: BLE001 - every other outcome is counted by type
            # cloudwds's source stage wraps errors it does not expect into a bare ShardError
            # ("ShardError: MemoryError: ..."): count those by their cause.
            cause = exn.__cause__ if type(exn).__name__ == "ShardError" else None
            if isinstance(cause, MemoryError):
                result["status"] = "memory"
            elif cause is not None or not isinstance(exn, typed):
                result["status"] = "untyped"
            else:
                result["status"] = "typed"
            result["type"] = type(cause or exn).__name__
            result["message"] = str(exn)[:200]
            result["names_member"] = _names_member(lib, exn, m["original"])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        results.append(result)
    with open(out, "w") as f:
        json.dump(results, f)


def run(lib: str, directory: str, memory: int, time_limit: float) -> list[dict[str, Any]]:
    out = os.path.join(directory, f"results-{lib}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", lib, directory, out]
    cmd += ["--memory-gib", str(memory / (1 << 30)), "--time-limit", str(time_limit)]
    subprocess.run(cmd, check=True)
    with open(out) as f:
        result: list[dict[str, Any]] = json.load(f)
    return result


def summarize(mutants: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r for r in results if r["status"] in ("typed", "untyped", "memory")]
    must_fail = {m["file"] for m in mutants if m["must_fail_after"] is not None}
    untyped: dict[str, int] = {}
    for r in results:
        if r["status"] == "untyped":
            untyped[r["type"]] = untyped.get(r["type"], 0) + 1
    return {
        "mutants": len(results),
        "ok": sum(r["status"] == "ok" for r in results),
        "errors": len(errors),
        "hangs": sum(r["status"] == "hang" for r in results),
        "memory errors": sum(r["status"] == "memory" for r in results),
        "untyped errors": sum(r["status"] == "untyped" for r in results),
        "untyped by type": untyped,
        "errors naming the member": sum(bool(r.get("names_member")) for r in errors),
        "silent loss": sum(r["status"] == "ok" and r["file"] in must_fail for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=fuzz.SEED)
    parser.add_argument("--memory-gib", type=float, default=4.0, help="address space per child")
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds per mutant")
    parser.add_argument("--child", nargs=3, metavar=("LIB", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    memory = int(args.memory_gib * (1 << 30))
    if args.child:
        lib, directory, out = args.child
        child(lib, directory, out, memory=memory, time_limit=args.time_limit)
        return
    with tempfile.TemporaryDirectory(prefix="fuzz-compare-") as directory:
        mutants = [vars(m) for m in fuzz.write_mutants(directory, args.seed)]
        table = {}
        for lib in ("webdataset", "cloudwds"):
            table[lib] = summarize(mutants, run(lib, directory, memory, args.time_limit))
    print(f"seed {args.seed}, {len(mutants)} mutants, {args.memory_gib:g} GiB address space")
    print(f"and {args.time_limit:g} s per mutant, through WebDataset(url):\n")
    rows = [k for k in table["cloudwds"] if k != "untyped by type"]
    print(f"{'':28}{'webdataset':>12}{'cloudwds':>12}")
    for row in rows:
        print(f"{row:28}{table['webdataset'][row]:>12}{table['cloudwds'][row]:>12}")
    for lib in table:
        if table[lib]["untyped by type"]:
            print(f"\n{lib} untyped errors by type: {table[lib]['untyped by type']}")


if __name__ == "__main__":
    main()
