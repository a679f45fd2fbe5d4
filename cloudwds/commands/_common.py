"""Helpers shared by the subcommands: global options, shard lists, progress bars, sizes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import CloudWdsError, ShardError, StorageError
from ..storage import StorageConfig
from ..urls import expand_urls

T = TypeVar("T")


class CommandError(CloudWdsError):
    """A problem with what the user asked for; printed as one line, exit status 1."""


def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand accepts, also before the subcommand name.

    Defaults are ``SUPPRESS`` so a value given before the subcommand is not overwritten.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options")
    add_global_options(group, argparse.SUPPRESS)
    return parent


def add_global_options(parser: Any, default: Any = None) -> None:
    """``--storage-options``, ``--cache-dir``, ``--traceback``, ``-q/--quiet``."""
    parser.add_argument(
        "--storage-options",
        metavar="JSON",
        default=default,
        help="fsspec options as a JSON object (or @file.json), e.g. "
        '\'{"endpoint_url": "http://127.0.0.1:9000"}\' or per protocol \'{"s3": {...}, "gs": {...}}\'',
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=default,
        help="read remote shards through a shard cache in DIR (default: $WDS_CACHE, else no "
        "cache; 'cloudwds cache' uses the per-user default cache)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=False if default is None else default,
        help="on error, show the full traceback instead of one line",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default is None else default,
        help="no progress bar or summary messages",
    )


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """Parse ``--storage-options`` (JSON text or ``@file``)."""
    text = getattr(args, "storage_options", None)
    if not text:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exn:
            raise CommandError(f"--storage-options: cannot read {text[1:]!r}: {exn}") from None
    try:
        value = json.loads(text)
    except ValueError as exn:
        raise CommandError(f"--storage-options: not valid JSON: {exn}") from None
    if not isinstance(value, dict):
        raise CommandError("--storage-options: expected a JSON object")
    return value


def storage_from_args(args: argparse.Namespace, **kw: Any) -> StorageConfig:
    """The :class:`StorageConfig` for this invocation (arguments first, then ``WDS_*``).

    Unlike a dataset, a command reads remote shards through a cache only when asked
    (``--cache-dir`` or ``WDS_CACHE``): ``verify`` or ``stats`` over a large bucket would
    otherwise churn the per-user default cache and evict the shards training wants.
    """
    cache_dir = getattr(args, "cache_dir", None)
    if cache_dir is None and "WDS_CACHE" not in os.environ:
        cache_dir = False
    return StorageConfig.resolve(storage_options=storage_options(args), cache_dir=cache_dir, **kw)


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def shard_urls(specs: Sequence[str]) -> list[str]:
    """Expand each command-line argument (brace patterns, ``a::b`` lists) into shard URLs."""
    urls: list[str] = []
    for spec in specs:
        expanded = expand_urls(spec)
        if not expanded:
            raise CommandError(f"no shard URLs in {spec!r}")
        urls.extend(expanded)
    if not urls:
        raise CommandError("no shard URLs given")
    return urls


def progress(args: argparse.Namespace, total: int | None, unit: str, desc: str) -> Any:
    """A tqdm bar on stderr: off with ``--quiet``, and off when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=True if quiet(args) else None,
        unit_scale=unit == "B",
        leave=False,
    )


def per_shard(
    urls: Sequence[str],
    fn: Callable[[str], T],
    workers: int,
    bar: Any = None,
) -> Iterator[tuple[str, T | None, BaseException | None]]:
    """Run ``fn(url)`` on ``workers`` threads; yield ``(url, result, error)`` in input order.

    At most ``2 * workers`` shards are in flight, so a long list does not queue at once.
    """

    def call(url: str) -> tuple[T | None, BaseException | None]:
        try:
            return fn(url), None
        except Exception as exn:  # noqa: BLE001 - every shard's failure is reported, not raised
            return None, naming_url(exn, url)

    window: deque[tuple[str, Future[tuple[T | None, BaseException | None]]]] = deque()
    items = iter(urls)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cloudwds-cli") as pool:
        try:
            while True:
                while len(window) < 2 * max(1, workers):
                    url = next(items, None)
                    if url is None:
                        break
                    window.append((url, pool.submit(call, url)))
                if not window:
                    return
                url, future = window.popleft()
                result, error = future.result()
                if bar is not None:
                    bar.update(1)
                yield url, result, error
        finally:
            for _, future in window:
                future.cancel()


def human_size(n: int | None) -> str:
    """``ls -h``-style sizes in powers of 1024: ``512``, ``20K``, ``1.5M``, ``3.0G``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T", "P"):
        if abs(value) < 1024 or unit == "P":
            if unit == "":
                return str(n)
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(?:i?b)?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """``"100M"``, ``"1.5G"``, ``"10GB"``, ``"4096"`` → bytes (powers of 1024, as the cache)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"cannot parse size {text!r} (e.g. 4096, 100M, 1.5G)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def write_out(text: str) -> None:
    sys.stdout.write(text + "\n")


def note(args: argparse.Namespace, text: str) -> None:
    """A summary line on stderr, unless ``--quiet``."""
    if not quiet(args):
        print(text, file=sys.stderr)


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _urls_in(exn: BaseException) -> Iterator[str]:
    """The ``url`` attributes along the cause chain (cloudwds errors carry one)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exn]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        url = getattr(e, "url", None)
        if isinstance(url, str) and url:
            yield url
        todo += [e.__cause__, e.__context__]


def naming_url(exn: BaseException, url: str) -> BaseException:
    """``exn`` if it names ``url`` (or its URL is unknown to us), else an error that does.

    A cloudwds error without a URL gets this one; any other error is wrapped in a
    :class:`~cloudwds.errors.StorageError` (an ``OSError``) for ``url``, chaining it.
    """
    if url in error_message(exn):
        return exn
    if isinstance(exn, ShardError | StorageError) and exn.url is None:
        exn.url = url
        return exn
    wrapped = StorageError(f"{type(exn).__name__}: {exn}", url)
    wrapped.__cause__ = exn
    return wrapped


def error_message(exn: BaseException) -> str:
    """The text of the CLI's one-line error report; it names the URL whenever one is known.

    Errors cloudwds expects (its own, ``OSError``, ``ValueError``) print as their message;
    others are prefixed with their type, as they are probably bugs. When an error of the
    cause chain carries a URL that the message does not mention, it is appended.
    """
    if isinstance(exn, CloudWdsError | OSError | ValueError):
        message = str(exn) or type(exn).__name__
    else:
        message = f"{type(exn).__name__}: {exn}"
    for url in _urls_in(exn):
        if url not in message:
            message += f" (url={url!r})"
        break
    return message
