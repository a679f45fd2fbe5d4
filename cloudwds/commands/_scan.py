"""Read one shard completely and describe it: counts per field, duplicates, the manifest entry.

Shared by ``stats`` and ``verify``. Samples are grouped the way readers group them (runs of
consecutive members with the same key), so the numbers agree with what a pipeline yields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..index import ShardInfo, scan_shard
from ..samples import split_name
from ..storage import StorageConfig

MAX_EXAMPLES = 3


@dataclass
class ShardReport:
    """What a full read of one shard found; ``info`` is ``None`` when the read failed."""

    url: str
    info: ShardInfo | None = None
    field_bytes: Counter[str] = field(default_factory=Counter)
    field_samples: Counter[str] = field(default_factory=Counter)  # samples having the field
    duplicate_fields: int = 0  # a field repeated inside one sample (a.jpg, a.jpg)
    split_keys: int = 0  # a key that comes back after other keys (non-adjacent duplicate)
    unnamed: int = 0  # members without a field (no dot in the file name)
    samples_started: int = 0  # samples with at least one member read (also when the read fails)
    decode_failures: int = 0  # members that did not decode (``decode=True``)
    decode_examples: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def _example(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)

    @property
    def samples_readable(self) -> int:
        """Samples read: all of them after a full read; after an error, those with at least one
        member read before it (the last of them may lack fields that came after the break)."""
        return self.info.samples if self.info is not None else self.samples_started


def read_shard(
    url: str,
    storage: StorageConfig,
    *,
    checksum: str | None = None,
    verify_checksums: bool = False,
    decode: bool = False,
) -> ShardReport:
    """Read ``url`` to the end; errors are recorded in the report, not raised.

    ``decode=True`` also decodes every member by its extension (images fully, to pixels;
    json, cls, npy... with the default decoders), recording each member that fails: a corrupt
    JPEG has valid tar framing and passes every other check.
    """
    report = ShardReport(url)
    decode_member = _member_decoder() if decode else None
    state: dict[str, object] = {"key": None, "fields": set()}
    seen: set[str] = set()

    def on_member(name: str, data: bytes) -> None:
        parts = split_name(name)
        if parts is None:
            report.unnamed += 1
            return
        key, suffix = parts
        fields = state["fields"]
        assert isinstance(fields, set)
        if key != state["key"]:
            if key in seen:
                report.split_keys += 1
                report._example(f"key {key!r} appears again after other keys (member {name!r})")
            seen.add(key)
            report.samples_started += 1
            state["key"] = key
            fields = state["fields"] = set()
        if suffix in fields:
            report.duplicate_fields += 1
            report._example(f"field {suffix!r} twice in sample {key!r}")
        else:
            fields.add(suffix)
            report.field_samples[suffix] += 1
        report.field_bytes[suffix] += len(data)
        if decode_member is not None:
            problem = decode_member(suffix, data)
            if problem is not None:
                report.decode_failures += 1
                if len(report.decode_examples) < MAX_EXAMPLES:
                    report.decode_examples.append(f"member {name!r}: {problem}")

    try:
        report.info = scan_shard(
            url,
            storage,
            checksum=checksum,
            verify_checksums=verify_checksums,
            on_member=on_member,
        )
    except Exception as exn:  # noqa: BLE001 - every failure of the read is what is reported
        report.error = exn
    return report


def _member_decoder() -> Callable[[str, bytes], str | None]:
    """``(suffix, data) -> None`` if the member decodes, else the reason it does not."""
    from ..codecs import make_decoder
    from ..errors import UnsafeInputError

    decoder = make_decoder("rgb8")  # decodes the pixels (PIL opens images lazily)

    def check(suffix: str, data: bytes) -> str | None:
        try:
            decoder.decode1(suffix, data)
        except UnsafeInputError:
            return None  # refused by policy (pickles), not damaged: nothing to report
        except Exception as exn:  # noqa: BLE001 - any failure is what verify reports
            cause = exn.__cause__ or exn
            return f"{type(cause).__name__}: {cause}"
        return None

    return check
