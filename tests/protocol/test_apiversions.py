from __future__ import annotations

import pytest

from cerulean.protocol.apiversions import KNOWN_API_VERSIONS, parse_api_version


@pytest.mark.parametrize("text", KNOWN_API_VERSIONS)
def test_every_published_version_is_accepted(text: str) -> None:
    version = parse_api_version(text)
    assert version is not None and version.text == text


@pytest.mark.parametrize("text", [None, "", "2023-12-01", "2023-11-01-preview", "v1", "latest"])
def test_unknown_versions_are_refused(text: str | None) -> None:
    assert parse_api_version(text) is None


def test_annotations_start_with_2023_06_01_preview() -> None:
    assert not parse_api_version("2023-05-15").has_content_filter_annotations  # type: ignore[union-attr]
    assert parse_api_version("2023-06-01-preview").has_content_filter_annotations  # type: ignore[union-attr]
    assert parse_api_version("2024-10-21").has_content_filter_annotations  # type: ignore[union-attr]
