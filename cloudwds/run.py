"""``python -m cloudwds.run script.py [args]`` / ``python -m cloudwds.run -m module [args]``.

Runs unmodified training code that says ``import webdataset`` on cloudwds, without touching the
code: the launcher installs the alias (:func:`cloudwds.install_as_webdataset`, with
``subprocesses=True`` so ``torchrun``-style child processes get it too), then runs the script or
module the way ``python`` itself would: as ``__main__``, with ``sys.argv`` and ``sys.path[0]`` set
as ``python script.py`` / ``python -m module`` set them. Exceptions and ``SystemExit`` propagate,
so exit codes and tracebacks are the script's own.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

from .as_webdataset import install_as_webdataset

USAGE = """\
usage: python -m cloudwds.run script.py [args ...]
       python -m cloudwds.run -m module [args ...]

Run a Python script or module with `import webdataset` (and webdataset.*) resolving to cloudwds.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Install the webdataset alias, then run ``argv`` like the ``python`` command would."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0 if args else 2)
    if args[0] == "-m":
        if len(args) < 2:
            sys.stderr.write(USAGE)
            raise SystemExit(2)
        module, rest = args[1], args[2:]
        # `python -m mod` puts the working directory first on sys.path; `python -m cloudwds.run`
        # already did, so sys.path[0] stays as it is.
        install_as_webdataset(subprocesses=True)
        sys.argv = [module, *rest]  # run_module(alter_sys=True) replaces argv[0] by the file path
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    script, rest = args[0], args[1:]
    if not os.path.exists(script):
        sys.stderr.write(f"python -m cloudwds.run: can't open file {script!r}: no such file\n")
        raise SystemExit(2)
    # `python script.py` puts the script's directory (links resolved) first on sys.path, where
    # `python -m cloudwds.run` put the working directory. The opt-in then puts its shim in front
    # of it, so spawned workers find the shim before any other `webdataset` on the path.
    script_dir = os.path.dirname(os.path.realpath(script))
    if sys.path:
        sys.path[0] = script_dir
    else:
        sys.path.insert(0, script_dir)
    install_as_webdataset(subprocesses=True)
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
