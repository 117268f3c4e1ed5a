"""Range header parsing, as S3 interprets it."""

from __future__ import annotations

import pytest

from datalab.storage.streaming import UnsatisfiableRange, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("BYTES=1-1", (1, 1)),
    ],
)
def test_single_ranges(header: str, expected: tuple[int, int]) -> None:
    byte_range = parse_range(header, 1000)
    assert byte_range is not None
    assert (byte_range.start, byte_range.end) == expected
    assert byte_range.length == expected[1] - expected[0] + 1


@pytest.mark.parametrize(
    "header", [None, "", "bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=5-1", "bytes=-"]
)
def test_absent_malformed_or_multiple_ranges_mean_the_whole_object(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=5000-6000", 1000), ("bytes=-0", 10), ("bytes=-5", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, size)
