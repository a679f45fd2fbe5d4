"""Read one shard completely and describe it: counts per field, duplicates, the manifest entry.

Shared by ``stats`` and ``verify``. Samples are grouped the way readers group them (runs of
consecutive members with the same key), so the numbers agree with what a pipeline yields.
"""

from __future__ import annotations

from collections import Counter
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
    examples: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def _example(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


def read_shard(
    url: str,
    storage: StorageConfig,
    *,
    checksum: str | None = None,
    verify_checksums: bool = False,
) -> ShardReport:
    """Read ``url`` to the end; errors are recorded in the report, not raised."""
    report = ShardReport(url)
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
            state["key"] = key
            fields = state["fields"] = set()
        if suffix in fields:
            report.duplicate_fields += 1
            report._example(f"field {suffix!r} twice in sample {key!r}")
        else:
            fields.add(suffix)
            report.field_samples[suffix] += 1
        report.field_bytes[suffix] += len(data)

    try:
        report.info = scan_shard(
            url,
            storage,
            checksum=checksum,
            verify_checksums=verify_checksums,
            on_member=on_member,
        )
    except Exception as exn:
        report.error = exn
    return report
