"""The smaller stream stages of webdataset's API: field lookups, key extraction, logging, caching.

:mod:`cloudwds.stages` holds the stages every pipeline uses (shuffle, decode, to_tuple, batched);
this module holds the rest of webdataset's public stage vocabulary so that code written for it
runs unchanged: ``getfirst``, ``transform_with``, ``info``, ``log_keys``, ``associate``,
``extract_keys``, ``xdecode``, ``unlisted``, ``non_empty``, ``resampled``, ``detshuffle``,
``Cached``. They are plain generator functions (curried by :func:`cloudwds.filters.pipelinefilter`)
or small stage objects; randomness comes from the iteration's :class:`~cloudwds.world.World`.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from fnmatch import fnmatch
from typing import Any, TextIO

from .buffers import _shuffled
from .errors import MissingKeyError
from .stagebase import PipelineStage, Stage
from .world import World, current_world


def getfirst(
    a: dict[str, Any], keys: str | Sequence[str], default: Any = None, missing_is_error: bool = True
) -> Any:
    """The value of the first of ``keys`` (a list or ``"jpg;png"``) present in ``a``.

    A miss raises :class:`~cloudwds.errors.MissingKeyError` (a ``ValueError``, as webdataset
    raises) when ``missing_is_error``, else returns ``default``.
    """
    if isinstance(keys, str):
        keys = keys.split(";")
    for k in keys:
        if k in a:
            return a[k]
    if missing_is_error:
        raise MissingKeyError(
            f"didn't find {list(keys)} in {list(a.keys())}", a.get("__url__"), a.get("__key__")
        )
    return default


def parse_field_spec(fields: str | Sequence[str]) -> list[list[str]]:
    """``"jpg;png cls"`` → ``[["jpg", "png"], ["cls"]]``."""
    if isinstance(fields, str):
        fields = fields.split()
    return [field.split(";") for field in fields]


def transform_with(
    sample: Sequence[Any], transformers: Sequence[Callable[[Any], Any] | None]
) -> Any:
    """Apply ``transformers[i]`` to ``sample[i]``; ``None`` or missing transformers keep the value."""
    if not transformers:
        return sample
    if len(transformers) > len(sample):
        raise ValueError(f"{len(transformers)} transformers for a sample of {len(sample)} values")
    result = list(sample)
    for i, f in enumerate(transformers):
        if f is not None:
            result[i] = f(sample[i])
    return result


def info(
    data: Iterable[Any],
    fmt: str | None = None,
    n: int = 3,
    every: int = -1,
    width: int = 50,
    stream: TextIO | None = None,
    name: str = "",
) -> Iterator[Any]:
    """Print the first ``n`` samples (and every ``every``-th) passing through, unchanged."""
    out = sys.stderr if stream is None else stream
    for i, sample in enumerate(data):
        if i < n or (every > 0 and (i + 1) % every == 0):
            if fmt is None:
                print("---", name, file=out)
                for k, v in sample.items():
                    print(k, repr(v)[:width], file=out)
            else:
                print(fmt.format(**sample), file=out)
        yield sample


def log_keys(data: Iterable[Any], logfile: str | None = None) -> Iterator[Any]:
    """Append ``index, worker, rank, __key__`` lines to ``logfile`` (locked), passing samples on."""
    if not logfile:
        yield from data
        return
    import fcntl

    with open(logfile, "a") as stream:
        for i, sample in enumerate(data):
            line = f"{i}\t{sample.get('__worker__')}\t{sample.get('__rank__')}\t{sample.get('__key__')}\n"
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
            try:
                stream.write(line)
                stream.flush()
            finally:
                fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
            yield sample


def associate(
    data: Iterable[dict[str, Any]],
    associator: Any,
    **kw: Any,  # noqa: ARG001 - webdataset's signature
) -> Iterator[Any]:
    """Add fields from ``associator(key)`` or ``associator.get(key, {})`` to each sample."""
    for sample in data:
        if callable(associator):
            extra = associator(sample["__key__"])
        else:
            extra = associator.get(sample["__key__"], {})
        yield {**sample, **extra}


def extract_keys(
    source: Iterable[dict[str, Any]],
    *patterns: str | Sequence[str],
    duplicate_is_error: bool = True,
    ignore_missing: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """Tuples of the fields matching glob ``patterns`` (``"*.jpg;*.png"``), one per pattern."""
    for sample in source:
        result = []
        for pattern in patterns:
            alternatives = pattern.split(";") if isinstance(pattern, str) else list(pattern)
            matches = [
                k for k in sample if any(fnmatch("." + k, p) or fnmatch(k, p) for p in alternatives)
            ]
            if not matches:
                if ignore_missing:
                    continue
                raise MissingKeyError(
                    f"Cannot find {alternatives} in sample keys {list(sample.keys())}.",
                    sample.get("__url__"),
                    sample.get("__key__"),
                )
            if len(matches) > 1 and duplicate_is_error:
                raise ValueError(
                    f"Multiple sample keys {list(sample.keys())} match {alternatives}."
                )
            result.append(sample[matches[0]])
        yield tuple(result)


def decode_bin(stream: io.BufferedIOBase) -> bytes:
    """xdecode's decoder for raw bytes."""
    return stream.read()


def decode_text(stream: io.BufferedIOBase) -> str:
    """xdecode's decoder for UTF-8 text."""
    return stream.read().decode("utf-8")


def decode_pickle(stream: io.BufferedIOBase) -> Any:
    """xdecode's decoder for ``.pyd``: goes through cloudwds's pickle policy."""
    from .codecs.basic import decode_pickle as policy_decode

    return policy_decode(stream.read())


default_decoders: list[tuple[str, Callable[[Any], Any]]] = [
    ("*.bin", decode_bin),
    ("*.txt", decode_text),
    ("*.pyd", decode_pickle),
]


def find_decoder(decoders: Sequence[tuple[str, Any]], path: str) -> Any:
    """The decoder of the last pattern matching ``path``'s file name; None when none matches."""
    fname = re.sub(r".*/", "", path)
    if fname.startswith("__"):
        return lambda x: x
    for pattern, fun in reversed(decoders):
        if fnmatch(fname.lower(), pattern) or fnmatch("." + fname.lower(), pattern):
            return fun
    return None


def xdecode(
    source: Iterable[dict[str, Any]],
    *args: tuple[str, Callable[[Any], Any]],
    must_decode: bool = True,
    defaults: Sequence[tuple[str, Callable[[Any], Any]]] = default_decoders,
    **kw: Callable[[Any], Any],
) -> Iterator[dict[str, Any]]:
    """Decode fields with ``(glob, f(stream))`` pairs; ``ext=f`` keywords mean ``("*.ext", f)``.

    A decoder of ``False`` keeps the bytes; a field no pattern matches is an error when
    ``must_decode``.
    """
    decoders = list(defaults) + list(args) + [("*." + k, v) for k, v in kw.items()]
    for sample in source:
        out: dict[str, Any] = {}
        for path, data in sample.items():
            if path.startswith("__"):
                out[path] = data
                continue
            decoder = find_decoder(decoders, path)
            if decoder is False:
                out[path] = data
            elif decoder is None:
                if must_decode:
                    raise ValueError(f"No decoder found for {path}.")
                out[path] = data
            else:
                out[path] = decoder(io.BytesIO(data) if isinstance(data, bytes) else data)
        yield out


def unlisted(data: Iterable[list[Any]]) -> Iterator[Any]:
    """Flatten lists of samples (what ``batched(n, collation_fn=None)`` makes)."""
    for batch in data:
        if not isinstance(batch, list):
            raise TypeError(f"unlisted expects lists of samples, got {type(batch).__name__}")
        yield from batch


def non_empty(src: Iterable[Any]) -> Iterator[Any]:
    """Pass items through; raise ``ValueError`` if there were none at all."""
    count = 0
    for item in src:
        yield item
        count += 1
    if count == 0:
        raise ValueError("pipeline stage received no data at all and this was declared as an error")


def resampled(src: Iterable[Any], n: int = sys.maxsize) -> Iterator[Any]:
    """Read all of ``src``, then draw ``n`` items with replacement.

    The draws are seeded from the iteration's world (seed, epoch, rank, worker) instead of
    ``/dev/random``, so runs repeat.
    """
    items = list(src)
    if not items:
        return
    rng = current_world().rng("resampled")
    for _ in range(n):
        yield rng.choice(items)


class detshuffle(Stage, PipelineStage):
    """Buffer shuffle seeded by ``seed`` and the epoch only: the same order in every worker.

    webdataset counts epochs in the stage object (a copy per worker); here the epoch is the
    pipeline's (see :mod:`cloudwds.epochs`), offset by ``epoch + 1``, so the first epoch of a
    default ``detshuffle(seed=s)`` uses seed ``s`` as webdataset's does.
    """

    def __init__(self, bufsize: int = 1000, initial: int = 100, seed: int = 0, epoch: int = -1):
        self.bufsize = bufsize
        self.initial = initial
        self.seed = seed
        self.epoch = epoch  # webdataset's attribute: the epoch the last iteration used
        self._start = epoch

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        import random

        self.epoch = self._start + 1 + world.epoch
        rng = random.Random(self.seed + self.epoch)
        return _shuffled(iter(src), self.bufsize, min(self.initial, self.bufsize), rng)

    def run(self, src: Iterable[Any]) -> Iterator[Any]:
        return self(src)


class Cached(PipelineStage):
    """Keep every sample of the first complete pass in memory and replay them afterwards.

    A pass stopped early is not cached. The cache lives in this object, so each DataLoader
    worker has its own, as in webdataset.
    """

    def __init__(self) -> None:
        self.cached: list[Any] | None = None

    def run(self, source: Iterable[Any]) -> Iterator[Any]:
        if self.cached is not None:
            yield from self.cached
            return
        temp = []
        for sample in source:
            temp.append(sample)
            yield sample
        self.cached = temp

    def close(self) -> None:
        self.cached = None


class LMDBCached(PipelineStage):
    """Cache the samples of the first complete pass in an LMDB database ``fname``, replay after.

    Samples are pickled on write; on read they go through cloudwds's allow-listing unpickler
    (:func:`cloudwds.security.load_pickle`), since the database is a file on disk that anything
    could have written: samples of plain data (bytes, str, numbers, arrays) round-trip, other
    objects need ``WDS_TRUSTED=1``. A pass stopped early leaves the cache incomplete, and the
    next pass rebuilds it. Needs the ``lmdb`` package.
    """

    _COMPLETE = b"__complete__"

    def __init__(
        self, fname: str, map_size: float = 1e12, pickler: Any = pickle, chunksize: int = 500
    ) -> None:
        import lmdb

        self.fname = fname
        self.db = lmdb.open(fname, readonly=False, map_size=int(map_size))
        self.pickler = pickler
        self.chunksize = chunksize

    def is_complete(self) -> bool:
        with self.db.begin(write=False) as txn:
            return txn.get(self._COMPLETE) is not None

    def add_samples(self, samples: list[tuple[int, Any]]) -> None:
        with self.db.begin(write=True) as txn:
            for index, sample in samples:
                txn.put(b"%012d" % index, self.pickler.dumps(sample))

    def run(self, source: Iterable[Any]) -> Iterator[Any]:
        from .security import load_pickle

        if self.is_complete():
            with self.db.begin(write=False) as txn:
                for key, value in txn.cursor():
                    if key != self._COMPLETE:
                        yield load_pickle(bytes(value), url=self.fname, member=key.decode())
            return
        buffer: list[tuple[int, Any]] = []
        for i, sample in enumerate(source):
            buffer.append((i, sample))
            if len(buffer) >= self.chunksize:
                self.add_samples(buffer)
                buffer = []
            yield sample
        self.add_samples(buffer)
        with self.db.begin(write=True) as txn:
            txn.put(self._COMPLETE, b"1")

    def close(self) -> None:
        self.db.close()
