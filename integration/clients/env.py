"""The environments the client tests run in, built once per machine and reused.

Two things are installed at test time, never vendored:

* a virtualenv (``--system-site-packages``, so it sees torch 2.13.0 CPU and the editable cloudwds)
  holding the pinned clients ``open_clip_torch``, ``timm`` and ``torchvision``; a constraints
  file pins ``torch==2.13.0`` so pip can never replace the CPU build;
* ``webdataset==0.2.86`` in a ``pip install --target`` directory, put first on ``PYTHONPATH`` for the
  reference run (the machine's own webdataset is 1.0.2, which open_clip cannot run on).

Both live under ``~/.cache/cloudwds-test/clients-<hash of the pins>`` (``CLOUDWDS_TEST_CACHE``
overrides the root), guarded by a file lock so parallel test processes build them once.

torchvision: the registry's torchvision 0.28.0 (the release made for torch 2.13.0) installs cleanly
but does not import on the CPU torch: its ``_C.so`` links ``libtorch_cuda.so``/``libc10_cuda.so``,
and its ``_meta_registrations`` then registers fake kernels for the ``torchvision::nms``/``qnms``
operators that the missing library would have defined. The venv therefore gets a start-up hook
(``_cloudwds_tv_shim.pth``) that, only when that library fails to load, defines those two operator
*schemas* (no kernels) before torchvision is imported. torchvision's Python side (transforms,
datasets) then works, and open_clip and timm are imported and run unchanged; only torchvision's
native detection/video ops stay unavailable, and no client data path touches them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout under test (holds cloudwds/)
TORCH_PIN = "torch==2.13.0"
CLIENT_PINS = (
    "open_clip_torch==3.3.0",  # ships open_clip_train/data.py (get_wds_dataset) in its wheel
    "timm==1.0.31",  # timm/data/readers/reader_wds.py (ReaderWds)
    "torchvision==0.28.0",  # the release built for torch 2.13.0 (see the module docstring)
    "pandas==3.1.1",  # imported at the top of open_clip_train/data.py (its CSV dataset)
)
REFERENCE_PIN = "webdataset==0.2.86"  # the last release open_clip allows (webdataset<=0.2.86)

# Imported by the .pth line at every start of the venv's Python; it costs nothing until something
# imports torchvision (a meta-path hook), and does nothing when torchvision's library loads.
_SHIM_SOURCE = '''\
"""Lets the CUDA build of torchvision import on a CPU-only torch (cloudwds client tests only)."""
import importlib.abc
import sys


class _TorchvisionOpsShim(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import glob
        import importlib.util
        import os

        import torch

        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return None
        libs = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
        try:
            torch.ops.load_library(libs[0])
        except (IndexError, OSError):
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _keep.append(lib)
            os.environ["CLOUDWDS_TEST_TORCHVISION_SHIM"] = "schemas-defined"
        return spec


_keep = []
sys.meta_path.insert(0, _TorchvisionOpsShim())
'''


@dataclass(frozen=True)
class ClientEnv:
    """Where the client venv and the reference webdataset live."""

    root: Path
    python: Path  # the venv's interpreter: runs both the reference and the cloudwds side
    reference_path: Path  # holds webdataset 0.2.86; first on PYTHONPATH for the reference run
    cold_install_seconds: float | None  # set only when this call built the environment

    def reference_env(self) -> dict[str, str]:
        """Environment for a run that must import webdataset 0.2.86."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.reference_path), env.get("PYTHONPATH", "")) if p
        )
        return env

    def cloudwds_env(self) -> dict[str, str]:
        """Environment for a run through the opt-in: this checkout's cloudwds first, no 0.2.86."""
        env = dict(os.environ)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        parts = [str(REPO_ROOT), *(p for p in parts if p != str(self.reference_path))]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return env


def cache_root() -> Path:
    """``$CLOUDWDS_TEST_CACHE`` or ``~/.cache/cloudwds-test``: shared with the other test helpers."""
    return Path(os.environ.get("CLOUDWDS_TEST_CACHE", Path.home() / ".cache" / "cloudwds-test"))


def _pins_hash() -> str:
    """Identifies one combination of pins, interpreter and shim, so a change builds a new dir."""
    text = "\n".join((TORCH_PIN, *CLIENT_PINS, REFERENCE_PIN, sys.version, _SHIM_SOURCE))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _pip(python: Path | str, *args: str) -> None:
    """Run pip, raising with its output on failure (a failed install must fail the test loudly)."""
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def _build(root: Path) -> None:
    """Create the venv and the reference dir in ``root`` (a fresh directory)."""
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
    )
    python = venv / "bin" / "python"
    constraints = root / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _pip(python, "-c", str(constraints), *CLIENT_PINS)
    site = _site_packages(python)
    (site / "_cloudwds_tv_shim.py").write_text(_SHIM_SOURCE)
    (site / "_cloudwds_tv_shim.pth").write_text("import _cloudwds_tv_shim\n")
    # --no-deps: 0.2.86 needs braceexpand, numpy and PyYAML, which cloudwds already requires.
    _pip(python, "--no-deps", "--target", str(root / "webdataset-0.2.86"), REFERENCE_PIN)


def client_env() -> ClientEnv:
    """The client environment, built on first use (minutes) and reused afterwards (instant)."""
    root = cache_root() / f"clients-{_pins_hash()}"
    root.parent.mkdir(parents=True, exist_ok=True)
    ready = root / "ready.json"
    cold: float | None = None
    with FileLock(str(root) + ".lock"):
        if not ready.exists():
            if root.exists():  # a build that died half-way: start over
                subprocess.run(["rm", "-rf", str(root)], check=True)
            root.mkdir()
            start = time.monotonic()
            _build(root)
            cold = time.monotonic() - start
            pins = [TORCH_PIN, *CLIENT_PINS, REFERENCE_PIN]
            ready.write_text(json.dumps({"pins": pins, "seconds": round(cold, 1)}))
    return ClientEnv(
        root=root,
        python=root / "venv" / "bin" / "python",
        reference_path=root / "webdataset-0.2.86",
        cold_install_seconds=cold,
    )


if __name__ == "__main__":  # build (or find) the environment and say where it is
    env = client_env()
    print(
        env.root, f"cold install {env.cold_install_seconds} s" if env.cold_install_seconds else ""
    )
