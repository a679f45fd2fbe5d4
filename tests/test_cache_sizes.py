"""parse_size / format_size: the forms people type for WDS_CACHE_SIZE."""

from __future__ import annotations

import pytest

from cloudwds.cache import format_size, parse_size

G = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("123", 123),
        ("100B", 100),
        ("1K", 1024),
        ("1k", 1024),
        ("1KB", 1024),
        ("1KiB", 1024),
        ("500M", 500 << 20),
        ("50G", 50 * G),
        ("10GB", 10 * G),
        ("10gib", 10 * G),
        ("1.5T", int(1.5 * (1 << 40))),
        (".5K", 512),
        (" 2 G ", 2 * G),
        ("1P", 1 << 50),
    ],
)
def test_parse_size_accepts_common_forms(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_passes_ints_through() -> None:
    assert parse_size(7) == 7
    assert parse_size(0) == 0


@pytest.mark.parametrize("text", ["", "G", "-1", "1X", "1.2.3", "nan", "inf", "1iB", "1 0G", "1e9"])
def test_parse_size_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_parse_size_rejects_negative_ints_and_other_types() -> None:
    with pytest.raises(ValueError):
        parse_size(-1)
    with pytest.raises(TypeError):
        parse_size(True)
    with pytest.raises(TypeError):
        parse_size(1.5)  # type: ignore[arg-type]


def test_format_size_is_readable_and_close_to_the_inverse() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(50 * G) == "50.0 GiB"
    assert parse_size(format_size(50 * G).replace(" ", "")) == 50 * G
