"""The ``import webdataset`` opt-in (cloudwds.as_webdataset) and its launcher (cloudwds.run).

Every check runs in a fresh interpreter: the alias changes process-wide import state, and the
point is what a user's process sees (including spawned DataLoader workers), not this one's.
The real webdataset 1.0.2 is installed in the test environment, so "resolves to cloudwds" is
told apart from "found the installed webdataset" by the module's name and file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cloudwds
from cloudwds.as_webdataset import shim_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _python(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_code(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _python(["-c", textwrap.dedent(code)], cwd)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def test_exported_from_package() -> None:
    assert cloudwds.install_as_webdataset is cloudwds.as_webdataset.install_as_webdataset
    assert "install_as_webdataset" in cloudwds.__all__
    assert os.path.isfile(os.path.join(shim_path(), "webdataset", "__init__.py"))


def test_alias_gives_cloudwds_module_objects(tmp_path: Path) -> None:
    proc = _run_code(
        """
            import logging, pickle, sys
            logging.basicConfig(
                level=logging.INFO, format="LOG %(name)s %(message)s", stream=sys.stdout
            )
            import cloudwds
            cloudwds.install_as_webdataset()
            cloudwds.install_as_webdataset()  # idempotent, logs once
            import webdataset
            import webdataset.handlers
            import webdataset.writer as ww
            from webdataset import WebDataset, SimpleShardList
            from webdataset.handlers import reraise_exception
            import cloudwds.handlers, cloudwds.writer
            print("module", webdataset is cloudwds, webdataset.__name__)
            print("sub", webdataset.handlers is cloudwds.handlers, ww is cloudwds.writer)
            print("sysmod", sys.modules["webdataset.handlers"] is cloudwds.handlers)
            print("names", WebDataset is cloudwds.WebDataset,
                  reraise_exception is cloudwds.handlers.reraise_exception)
            shards = SimpleShardList(["a.tar", "b.tar"])
            back = pickle.loads(pickle.dumps(shards))
            print("pickle", type(back) is cloudwds.SimpleShardList, isinstance(back, SimpleShardList))
            try:
                import webdataset.no_such_module
            except ModuleNotFoundError as exc:
                print("missing", exc.name)
            import webdataset.cache.download  # a subpackage's module, through the alias
            import cloudwds.cache
            print("package", webdataset.cache is cloudwds.cache,
                  sys.modules["webdataset.cache.download"] is cloudwds.cache.download)
            print("shim_first", sys.path[0] == cloudwds.as_webdataset.shim_path())
            print("is_installed", cloudwds.as_webdataset.is_installed())
            """,
        tmp_path,
    )
    lines = _ok(proc).splitlines()
    assert "module True cloudwds" in lines
    assert "sub True True" in lines
    assert "sysmod True" in lines
    assert "names True True" in lines
    assert "pickle True True" in lines
    assert "missing webdataset.no_such_module" in lines
    assert "package True True" in lines
    assert "shim_first True" in lines
    assert "is_installed True" in lines
    # One info line per process, however often the opt-in is called.
    logs = [line for line in lines if line.startswith("LOG cloudwds.as_webdataset")]
    assert len(logs) == 1 and "resolves to cloudwds" in logs[0], lines


def test_client_imports_resolve_to_cloudwds_submodules(tmp_path: Path) -> None:
    """The imports open_clip, timm and diffusers make, each answered by cloudwds's own module."""
    out = _ok(
        _run_code(
            """
            import cloudwds
            cloudwds.install_as_webdataset()
            import webdataset as wds
            import webdataset.tariterators
            from webdataset.filters import _shuffle, pipelinefilter, getfirst
            from webdataset.tariterators import (
                base_plus_ext, url_opener, tar_file_expander, valid_sample, group_by_keys,
            )
            from webdataset.shardlists import expand_urls
            from webdataset.utils import pytorch_worker_seed
            from webdataset import WebDataset, PipelineStage
            import cloudwds.filters, cloudwds.tariterators, cloudwds.shardlists, cloudwds.utils
            print(webdataset.tariterators is cloudwds.tariterators)
            print(_shuffle is cloudwds.filters._shuffle, getfirst is cloudwds.filters.getfirst)
            print(tar_file_expander is cloudwds.tariterators.tar_file_expander)
            print(expand_urls is cloudwds.shardlists.expand_urls)
            print(pytorch_worker_seed is cloudwds.utils.pytorch_worker_seed)
            print(WebDataset is cloudwds.WebDataset, PipelineStage is cloudwds.PipelineStage)
            print(base_plus_ext("a/b.c.jpg"))
            """,
            tmp_path,
        )
    )
    assert out.splitlines() == [
        "True",
        "True True",
        "True",
        "True",
        "True",
        "True True",
        "('a/b', 'c.jpg')",
    ]


def test_not_by_default(tmp_path: Path) -> None:
    """Importing cloudwds (even its shim package by name) never redirects ``webdataset``."""
    out = _ok(
        _run_code(
            """
            import cloudwds
            import cloudwds._webdataset_shim.webdataset
            import webdataset
            print(webdataset.__name__, webdataset is cloudwds)
            print(webdataset.__file__)
            print(cloudwds.as_webdataset.is_installed())
            """,
            tmp_path,
        )
    )
    name, file, installed = out.splitlines()
    assert name == "webdataset False"
    assert "site-packages" in file and "cloudwds" not in file
    assert installed == "False"


def test_refuses_when_real_webdataset_already_imported(tmp_path: Path) -> None:
    out = _ok(
        _run_code(
            """
            import sys
            import webdataset
            real = webdataset
            import cloudwds
            try:
                cloudwds.install_as_webdataset()
            except ImportError as exc:
                print("refused:", exc)
            print(sys.modules["webdataset"] is real, cloudwds.as_webdataset.is_installed())
            """,
            tmp_path,
        )
    )
    refused, state = out.splitlines()
    assert refused.startswith("refused: ")
    assert "already imported" in refused and "before anything imports webdataset" in refused
    assert "site-packages" in refused  # says which webdataset it found
    assert state == "True False"  # nothing was changed


def test_uninstall_restores_normal_lookup(tmp_path: Path) -> None:
    out = _ok(
        _run_code(
            """
            import sys
            import cloudwds
            from cloudwds.as_webdataset import shim_path, uninstall_as_webdataset
            cloudwds.install_as_webdataset(subprocesses=True)
            import webdataset, webdataset.handlers
            assert webdataset is cloudwds
            uninstall_as_webdataset()
            print(shim_path() in sys.path, "PYTHONPATH" in __import__("os").environ)
            import webdataset
            print(webdataset.__name__, webdataset is cloudwds)
            """,
            tmp_path,
        )
    )
    assert out.splitlines() == ["False False", "webdataset False"]


_LOADER_SCRIPT = """
import os
import sys

import torch
import webdataset as wds


def tag(sample):
    # Runs in the DataLoader worker: which library did `import webdataset` give this process,
    # and was the real webdataset ever loaded here?
    real = [
        name
        for name, module in list(sys.modules.items())
        if name.split(".")[0] == "webdataset"
        and "site-packages" in (getattr(module, "__file__", None) or "")
    ]
    return int(sample["cls"]), wds.__name__, len(real), os.getpid()


def main():
    {install}
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for shard in range(4):
        with wds.TarWriter(f"{{out}}/shard-{{shard}}.tar") as sink:
            for i in range(5):
                sink.write({{"__key__": f"s{{shard}}-{{i}}", "cls": str(shard * 5 + i)}})
    dataset = wds.WebDataset(f"{{out}}/shard-{{{{0..3}}}}.tar", shardshuffle=False).map(tag)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="{context}"
    )
    rows = list(loader)
    print("classes", sorted(r[0] for r in rows))
    print("libraries", sorted({{r[1] for r in rows}}))
    print("real_loaded", sum(r[2] for r in rows))
    print("workers", len({{r[3] for r in rows}} - {{os.getpid()}}))


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize(
    ("context", "launch"),
    [("spawn", "launcher"), ("forkserver", "launcher"), ("spawn", "call")],
)
def test_spawned_dataloader_workers_resolve_to_cloudwds(
    tmp_path: Path, context: str, launch: str
) -> None:
    """Workers re-import the user's ``__main__`` (``import webdataset``) and still get cloudwds."""
    if launch == "call":
        # The user's own opt-in call: `import webdataset` above it would be the real one, so the
        # script imports cloudwds first and binds `wds` after installing.
        script = _LOADER_SCRIPT.replace(
            "import webdataset as wds\n",
            "import cloudwds\ncloudwds.install_as_webdataset()\nimport webdataset as wds\n",
        ).format(install="pass", context=context)
        cmd = [str(tmp_path / "train.py"), str(tmp_path / "data")]
    else:
        script = _LOADER_SCRIPT.format(install="pass", context=context)
        cmd = ["-m", "cloudwds.run", str(tmp_path / "train.py"), str(tmp_path / "data")]
    (tmp_path / "train.py").write_text(script)
    out = _ok(_python(cmd, tmp_path, timeout=240)).splitlines()
    assert f"classes {list(range(20))}" in out
    assert "libraries ['cloudwds']" in out
    assert "real_loaded 0" in out
    assert "workers 2" in out


def test_run_script_like_python(tmp_path: Path) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "helper_mod.py").write_text("VALUE = 'found next to the script'\n")
    (sub / "train.py").write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys
            import webdataset
            import helper_mod  # importable because sys.path[0] is the script's directory
            print("name", __name__)
            print("argv", sys.argv)
            # The script's directory, as `python train.py` puts it, right after the shim.
            print("path", sys.path[1] == os.path.dirname(os.path.realpath(__file__)),
                  sys.path[0].endswith("_webdataset_shim"))
            print("lib", webdataset.__name__)
            print("helper", helper_mod.VALUE)
            child = subprocess.run(
                [sys.executable, "-c", "import webdataset; print(webdataset.__name__)"],
                capture_output=True, text=True, check=True,
            )
            print("child", child.stdout.strip())
            sys.exit(3)
            """
        )
    )
    proc = _python(["-m", "cloudwds.run", "proj/train.py", "--lr", "0.1"], tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == [
        "name __main__",
        "argv ['proj/train.py', '--lr', '0.1']",
        "path True True",
        "lib cloudwds",
        "helper found next to the script",
        "child cloudwds",  # a plain child Python process sees the alias through PYTHONPATH
    ]


def test_run_module_like_python_m(tmp_path: Path) -> None:
    pkg = tmp_path / "mytrain"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(
        textwrap.dedent(
            """
            import sys
            from webdataset import WebDataset
            import webdataset.handlers
            print("name", __name__)
            print("argv0", sys.argv[0].endswith("main.py"), sys.argv[1:])
            print("lib", WebDataset.__module__.split(".")[0], webdataset.handlers.__name__)
            """
        )
    )
    out = _ok(_python(["-m", "cloudwds.run", "-m", "mytrain.main", "x", "--y"], tmp_path))
    assert out.splitlines() == [
        "name __main__",
        "argv0 True ['x', '--y']",
        "lib cloudwds cloudwds.handlers",
    ]


def test_run_errors_and_usage(tmp_path: Path) -> None:
    usage = _python(["-m", "cloudwds.run"], tmp_path)
    assert usage.returncode == 2 and "usage: python -m cloudwds.run" in usage.stdout
    missing = _python(["-m", "cloudwds.run", "nope.py"], tmp_path)
    assert missing.returncode == 2 and "can't open file 'nope.py'" in missing.stderr
    (tmp_path / "boom.py").write_text("raise RuntimeError('from the script')\n")
    boom = _python(["-m", "cloudwds.run", "boom.py"], tmp_path)
    assert boom.returncode == 1
    assert "RuntimeError: from the script" in boom.stderr
