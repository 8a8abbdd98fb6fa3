"""User agents as the ``userAgent`` object the Altogic client shows."""

from __future__ import annotations

import pytest

from flowengine.auth import useragent

UNKNOWN = {"family": "Other", "major": None, "minor": None, "patch": None,
           "device": {"family": "Other", "brand": None, "model": None},
           "os": {"family": "Other", "major": None, "minor": None, "patch": None}}  # fmt: skip


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36",
            {"family": "Chrome", "major": "120", "minor": "0", "patch": "6099",
             "device": {"family": "Other", "brand": None, "model": None},
             "os": {"family": "Linux", "major": None, "minor": None, "patch": None}},
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Mobile Safari/537.36",
            {"family": "Chrome Mobile", "major": "116", "minor": "0", "patch": "0",
             "device": {"family": "Pixel 7", "brand": "Google", "model": "Pixel 7"},
             "os": {"family": "Android", "major": "13", "minor": None, "patch": None}},
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
            {"family": "Firefox", "major": "121", "minor": "0", "patch": None,
             "device": {"family": "Mac", "brand": "Apple", "model": "Mac"},
             "os": {"family": "Mac OS X", "major": "10", "minor": "15", "patch": None}},
        ),
        (None, UNKNOWN),
        ("", UNKNOWN),
        ("node", UNKNOWN),
    ],
    ids=["chrome-linux", "android-pixel", "firefox-mac", "missing", "empty", "unknown"],
)
def test_parse(header: str | None, expected: dict) -> None:
    assert useragent.parse(header) == expected


def test_a_huge_header_is_cut_before_parsing() -> None:
    parsed = useragent.parse("Mozilla/5.0 " + "(x; " * 100_000)
    assert set(parsed) == {"family", "major", "minor", "patch", "device", "os"}


def test_stored_compactly_and_shown_in_full() -> None:
    parsed = useragent.parse("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36")
    stored = useragent.compact(parsed)
    assert None not in stored.values() and None not in stored["device"].values()
    assert useragent.complete(stored) == parsed
    assert useragent.complete(None) == UNKNOWN
