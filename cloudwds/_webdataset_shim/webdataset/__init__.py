"""Shim: importing ``webdataset`` here installs cloudwds's alias and becomes ``cloudwds``.

This package is only reachable after :func:`cloudwds.install_as_webdataset` put its directory
first on ``sys.path`` (which multiprocessing hands to ``spawn``/``forkserver`` children, and
``python -m cloudwds.run`` also puts on ``PYTHONPATH``). A fresh process that imports
``webdataset`` lands here, installs the alias, and gets the ``cloudwds`` module back: the import
system returns whatever ``sys.modules["webdataset"]`` holds once this module has run.

Imported under its package name (``cloudwds._webdataset_shim.webdataset``, e.g. by a tool that
walks cloudwds's packages) it does nothing: the alias is only ever the user's explicit choice.
"""

import sys

if __name__ == "webdataset":
    from cloudwds.as_webdataset import SHIM_MARKER, install_as_webdataset

    globals()[SHIM_MARKER] = True
    install_as_webdataset()
    # install_as_webdataset() put cloudwds in sys.modules["webdataset"]; say so explicitly.
    sys.modules[__name__] = sys.modules["cloudwds"]
