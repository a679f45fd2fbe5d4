"""``Decoder``: turn a raw sample (suffix → bytes) into Python values, one handler chain per key.

A handler is ``f(key, data) -> value | None``; ``None`` means "not mine, ask the next one". The
key a handler sees is ``"." + suffix`` (``".jpg"``, ``".seg.png"``), exactly as in webdataset, so
handlers written as ``key.endswith(".png")`` keep working. Members whose suffix ends in ``.gz``
are gunzipped first and decoded by their inner suffix (``json.gz`` → JSON).

Every failure surfaces as :class:`~cloudwds.errors.DecodingError` naming the shard URL and the tar
member (``__key__ + "." + suffix``), with the original exception chained.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import DecodingError, ShardError
from ..tario import gunzip_member
from .basic import _DECODERS, TRUST_AWARE, basichandlers, extension_of, normalize_extension
from .images import IMAGE_SPECS, ImageHandler

HandlerFn = Callable[[str, bytes], Any]

_BYTES_LIKE = (bytes, bytearray, memoryview)


class MissingDependencyError(DecodingError, ImportError):
    """A decoder needs an optional package that is not installed; the message says which."""


# ---------------------------------------------------------------- extension handlers


class ExtensionHandler:
    """Handler applying ``f(data)`` to members whose suffix ends with one of ``extensions``.

    Matching is case-insensitive and ignores leading dots (``".png"`` == ``"png"``). A dotted
    extension such as ``"seg.png"`` matches only suffixes ending in those components
    (``seg.png``, ``a.seg.png``), never ``xseg.png``.
    """

    def __init__(self, extensions: str | Iterable[str], f: Callable[[bytes], Any]) -> None:
        """Precompute the lookups so the per-member test is one set probe and one ``endswith``."""
        if not callable(f):
            raise TypeError(f"handle_extension needs a callable, got {f!r}")
        items = extensions.split() if isinstance(extensions, str) else list(extensions)
        names = [normalize_extension(e) for e in items]
        if not names or not all(names):
            raise ValueError(f"no usable extension in {extensions!r}")
        self.extensions: tuple[str, ...] = tuple(names)
        self.f = f
        self._single = frozenset(n for n in names if "." not in n)
        self._dotted = tuple(n for n in names if "." in n)
        self._dotted_suffixes = tuple("." + n for n in self._dotted)

    def matches(self, key: str) -> bool:
        """Tell whether ``key`` (with or without its leading dot) has one of the extensions."""
        key = key.lower().lstrip(".")
        if key.rpartition(".")[2] in self._single:
            return True
        return bool(self._dotted) and (key in self._dotted or key.endswith(self._dotted_suffixes))

    def __call__(self, key: str, data: bytes) -> Any:
        """Return ``f(data)`` for a matching key, else None."""
        return self.f(data) if self.matches(key) else None

    def __repr__(self) -> str:
        name = getattr(self.f, "__qualname__", repr(self.f))
        return f"handle_extension({' '.join(self.extensions)!r}, {name})"


def handle_extension(extensions: str, f: Callable[[bytes], Any]) -> ExtensionHandler:
    """Wrap a plain ``f(bytes)`` decoder as a handler for space-separated ``extensions``.

    Lets users plug in a decoder without writing key-matching code, e.g.
    ``handle_extension("jpg jpeg", my_jpeg_decoder)``.
    """
    return ExtensionHandler(extensions, f)


# ---------------------------------------------------------------- video and audio


def _decode_via_tempfile(ext: str, data: bytes, load: Callable[[str], Any]) -> Any:
    # torchvision/torchaudio read from paths, and pick the demuxer from the file's extension.
    with tempfile.TemporaryDirectory() as dirname:
        fname = os.path.join(dirname, f"file.{ext}")
        with open(fname, "wb") as stream:
            stream.write(data)
        return load(fname)


VIDEO_EXTENSIONS = frozenset(["mp4", "ogv", "mjpeg", "avi", "mov", "h264", "mpg", "webm", "wmv"])
AUDIO_EXTENSIONS = frozenset(["flac", "mp3", "sox", "wav", "m4a", "ogg", "wma"])


def torch_video(key: str, data: bytes) -> Any:
    """Decode video members with ``torchvision.io.read_video`` → ``(video, audio, info)``.

    torchvision is optional; without it this raises :class:`MissingDependencyError` saying so.
    """
    ext = extension_of(key)
    if ext not in VIDEO_EXTENSIONS:
        return None
    try:
        import torchvision.io
    except ImportError as exn:
        raise MissingDependencyError(
            f"decoding .{ext} video needs torchvision (with video support): "
            "pip install torchvision matching your torch version"
        ) from exn
    return _decode_via_tempfile(
        ext, data, lambda fname: torchvision.io.read_video(fname, pts_unit="sec")
    )


def torch_audio(key: str, data: bytes) -> Any:
    """Decode audio members with ``torchaudio.load`` → ``(waveform, sample_rate)``.

    torchaudio is optional; without it this raises :class:`MissingDependencyError` saying so.
    """
    ext = extension_of(key)
    if ext not in AUDIO_EXTENSIONS:
        return None
    try:
        import torchaudio
    except ImportError as exn:
        raise MissingDependencyError(
            f"decoding .{ext} audio needs torchaudio: "
            "pip install torchaudio matching your torch version"
        ) from exn
    return _decode_via_tempfile(ext, data, torchaudio.load)


# ---------------------------------------------------------------- the decoder


def _flatten_handlers(args: Iterable[Any], what: str) -> list[HandlerFn]:
    out: list[HandlerFn] = []
    for arg in args:
        if isinstance(arg, list | tuple):
            out.extend(_flatten_handlers(arg, what))
        elif callable(arg):
            out.append(arg)
        else:
            raise TypeError(f"{what}: handlers must be callables f(key, data), got {arg!r}")
    return out


def _split_only(only: str | Iterable[str] | None) -> frozenset[str] | None:
    if only is None:
        return None
    items = only.split() if isinstance(only, str) else list(only)
    return frozenset(i.lower().lstrip(".") for i in items)


class Continue:
    """A handler's answer "decode this instead": ``Continue(new_key, new_data)``.

    The remaining handlers see the new key and data (webdataset's protocol, used by
    decompressing pre-handlers such as :func:`gzfilter`).
    """

    def __init__(self, key: str, data: bytes) -> None:
        self.key, self.data = key, data


def gzfilter(key: str, data: bytes) -> Continue | None:
    """Pre-handler: gunzip ``*.gz`` members and continue with the inner extension.

    cloudwds's :class:`Decoder` gunzips ``.gz`` fields itself; this exists for handler lists
    written for webdataset.
    """
    if not key.endswith(".gz"):
        return None
    return Continue(key[:-3], gunzip_member(data))


def _webdataset_positional(args: tuple[Any, ...]) -> dict[str, Any] | None:
    """``Decoder([h], pre, post, only, partial)``: webdataset's positional form, if that is it."""
    if len(args) < 2 or not isinstance(args[0], list | tuple):
        return None
    rest = args[1:]
    if len(rest) > 4 or any(callable(x) for x in rest):
        return None
    names = ("pre", "post", "only", "partial")
    return {"handlers": args[0], **dict(zip(names, rest, strict=False))}


class Decoder:
    """Decode every field of a sample through ``pre + handlers + post``; first non-None wins.

    ``Decoder([h1, h2])`` (webdataset's list form, also with its positional
    ``pre, post, only, partial``) and ``Decoder(h1, h2)`` are the same. A handler may return
    :class:`Continue` to hand a new key and data to the handlers after it. Applied to a whole
    dataset instead of a sample (``Decoder(h)(dataset)``, as the webdataset README writes it),
    it returns the dataset with decoding appended.

    - ``pre`` defaults to nothing (gunzipping ``.gz`` is built in), ``post`` to
      ``[basichandlers]``, so ``Decoder([imagehandler("rgb")])`` still decodes json, cls...
    - ``only``: keys or extensions (list or space-separated) to decode; other fields pass
      through untouched. Used by ``to_tuple`` to decode only the requested fields.
    - ``partial``: webdataset's meaning; if True, fields that are not bytes (already decoded)
      pass through; if False they raise ``DecodingError``.
    - ``trusted``: ``True`` loads ``.pyd``/``.pickle``/``.pkl`` with full pickle and ``.pth``
      with ``weights_only=False`` (code in the data runs!); ``None`` (default) follows
      ``WDS_TRUSTED``; see :mod:`cloudwds.security`. A refused member raises
      :class:`~cloudwds.errors.UnsafeInputError` naming the shard URL and the member.

    Fields nobody handles stay ``bytes``. ``__``-prefixed metadata given as bytes becomes str.
    Picklable if its handlers are (all built-in handlers are).
    """

    def __init__(
        self,
        *handlers: HandlerFn | list[HandlerFn] | tuple[HandlerFn, ...],
        pre: list[HandlerFn] | None = None,
        post: list[HandlerFn] | None = None,
        only: str | Iterable[str] | None = None,
        partial: bool = False,
        trusted: bool | None = None,
    ) -> None:
        """Check every handler is callable up front so errors show at construction."""
        positional = _webdataset_positional(handlers)
        if positional is not None:
            handlers = tuple(positional.pop("handlers"))
            pre = positional.get("pre", pre)
            post = positional.get("post", post)
            only = positional.get("only", only)
            partial = positional.get("partial", partial)
        self.handlers: tuple[HandlerFn, ...] = tuple(
            _flatten_handlers(pre or [], "pre")
            + _flatten_handlers(handlers, "handlers")
            + _flatten_handlers([basichandlers] if post is None else post, "post")
        )
        self.only = _split_only(only)
        self.partial = bool(partial)
        self.trusted = None if trusted is None else bool(trusted)

    def __repr__(self) -> str:
        only = None if self.only is None else " ".join(sorted(self.only))
        trusted = "" if self.trusted is None else f", trusted={self.trusted}"
        return f"Decoder({list(self.handlers)!r}, only={only!r}, partial={self.partial}{trusted})"

    def decode1(self, key: str, data: bytes) -> Any:
        """Decode one field's bytes by its suffix ``key`` (no leading dot); bytes if unhandled."""
        while key.endswith(".gz"):
            data = gunzip_member(data)  # bounded: max_member_size
            key = key[:-3]
        dotted = "." + key
        ext: str | None = None
        for h in self.handlers:
            if h is basichandlers:
                # Inline the registry lookup: a decoder returning None (JSON "null") is kept.
                if ext is None:
                    ext = extension_of(key)
                f = _DECODERS.get(ext)
                if f is not None:
                    if self.trusted is not None and f in TRUST_AWARE:
                        return f(data, trusted=self.trusted)  # type: ignore[call-arg]
                    return f(data)
                continue
            result = h(dotted, data)
            if isinstance(result, Continue):
                dotted, data = result.key, result.data
                key, ext = dotted.lstrip("."), None
                continue
            if result is not None:
                return result
        return data

    def __call__(self, sample: Any) -> Any:
        """Return a new dict with each field decoded; raise ``DecodingError`` naming the member.

        Given a dataset (a pipeline or any iterable of samples) instead of a sample, return it
        with this decoder mapped over its samples.
        """
        if not isinstance(sample, Mapping):
            return _apply_to_dataset(self, sample)
        return self.decode(sample)

    def decode(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Decode one sample (webdataset's method name; ``__call__`` does the same)."""
        only, partial = self.only, self.partial
        result: dict[str, Any] = {}
        for k, v in sample.items():
            if k.startswith("__"):
                result[k] = _metadata_str(v) if isinstance(v, bytes) else v
                continue
            if only is not None and not _selected(k, only):
                result[k] = v
                continue
            if not isinstance(v, bytes):
                if isinstance(v, _BYTES_LIKE):
                    v = bytes(v)
                elif partial:
                    result[k] = v
                    continue
                else:
                    raise DecodingError(
                        f"field {k!r} is {type(v).__name__}, not bytes "
                        "(already decoded? use partial=True)",
                        url=_url(sample),
                        member=_member(sample, k),
                    )
            try:
                result[k] = self.decode1(k, v)
            except ShardError as exn:  # DecodingError, UnsafeInputError: add where, keep type
                if exn.url is None:
                    exn.url = _url(sample)
                if exn.member is None:
                    exn.member = _member(sample, k)
                raise
            except Exception as exn:
                raise DecodingError(
                    f"cannot decode {k!r}: {type(exn).__name__}: {exn}",
                    url=_url(sample),
                    member=_member(sample, k),
                ) from exn
        return result


def _apply_to_dataset(decoder: Decoder, dataset: Any) -> Any:
    compose = getattr(dataset, "compose", None)
    if callable(compose):
        from ..stages import map as map_stage

        return compose(map_stage(decoder))
    if isinstance(dataset, Iterable):
        return (decoder(sample) for sample in dataset)
    raise TypeError(
        f"Decoder applies to a sample (dict) or a dataset, got {type(dataset).__name__}"
    )


def _metadata_str(v: bytes) -> str | bytes:
    # webdataset turns bytes metadata (__key__ from some tar readers) into str when it can.
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v


def _selected(k: str, only: frozenset[str]) -> bool:
    # "only" names full suffixes ("seg.png") or extensions ("png"); "json.gz" counts as "json".
    base = k[:-3] if k.endswith(".gz") else k
    return k in only or base in only or extension_of(base) in only


def _url(sample: Mapping[str, Any]) -> str | None:
    url = sample.get("__url__")
    return None if url is None else str(url)


def _member(sample: Mapping[str, Any], k: str) -> str:
    return f"{sample.get('__key__')}.{k}"


def make_decoder(
    *args: str | HandlerFn,
    handler: Callable[[BaseException], bool] | None = None,
    pre: list[HandlerFn] | None = None,
    post: list[HandlerFn] | None = None,
    only: str | Iterable[str] | None = None,
    partial: bool = False,
    trusted: bool | None = None,
) -> Decoder:
    """Build the ``Decoder`` behind ``wds.decode(...)`` / ``.decode(...)`` from user arguments.

    Each arg is an image spec string (``"rgb"``, ``"torchrgb"``, ``"pil"``...) or a handler.
    With no args only the basic decoders run, so images stay bytes (as in webdataset).
    ``handler`` is the stage's error policy; it is accepted so callers can forward the
    keywords of ``decode()`` unchanged, and is applied by the stage, not by the Decoder.
    ``trusted`` opts in to full pickle / torch loads (see :class:`Decoder`).
    """
    del handler  # the map stage applies the error policy
    handlers: list[HandlerFn] = []
    for arg in args:
        if isinstance(arg, str):
            if arg.lower() not in IMAGE_SPECS:
                raise ValueError(
                    f"unknown image spec {arg!r}; valid specs: {', '.join(IMAGE_SPECS)}"
                )
            handlers.append(ImageHandler(arg))
        elif callable(arg) or isinstance(arg, list | tuple):
            handlers.extend(_flatten_handlers([arg], "decode"))
        else:
            raise TypeError(f"decode() takes image specs or handlers, got {arg!r}")
    return Decoder(handlers, pre=pre, post=post, only=only, partial=partial, trusted=trusted)
