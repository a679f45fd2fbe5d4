"""Holder of the ``webdataset`` shim package; see :mod:`cloudwds.as_webdataset`.

This directory (not this package) goes on ``sys.path`` when the opt-in is installed.
"""
