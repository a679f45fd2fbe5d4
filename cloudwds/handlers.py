"""Error policies shared by every stage (open, tar, decode, map).

A handler receives the exception and returns ``True`` to skip the item and go on, or ``False``
to end the stream quietly; re-raising propagates the error. The ``warn_`` policies report each
error once, as a WARNING on the ``cloudwds`` logger (shown on stderr without any logging set-up;
the message names the shard URL and member), and never sleep (webdataset's
``warn_and_continue`` sleeps 0.5 s per error). There is no :mod:`warnings` warning as well: it
printed every error a second time, pointing at cloudwds's stage code instead of the user's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("cloudwds")

Handler = Callable[[BaseException], bool]


def reraise_exception(exn: BaseException) -> bool:
    """Default policy: the error stops the pipeline and reaches the caller."""
    raise exn


def warn_and_continue(exn: BaseException) -> bool:
    """Log the error (one WARNING line), then skip the failing item."""
    _warn(exn)
    return True


def ignore_and_continue(exn: BaseException) -> bool:  # noqa: ARG001 - a handler's signature
    """Skip the failing item silently."""
    return True


def warn_and_stop(exn: BaseException) -> bool:
    """Log the error (one WARNING line), then end the current stream without raising."""
    _warn(exn)
    return False


def ignore_and_stop(exn: BaseException) -> bool:  # noqa: ARG001 - a handler's signature
    """End the current stream silently."""
    return False


def _warn(exn: BaseException) -> None:
    log.warning("%s: %s", type(exn).__name__, exn)
