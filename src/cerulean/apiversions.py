"""The ``api-version`` values Azure OpenAI has published (wire reference §1.6).

Cerulean accepts every one of them, retired previews included, so that old client code runs
unchanged; anything else gets Azure's 404 ``Resource not found``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOWN_API_VERSIONS", "ApiVersion", "parse_api_version"]

KNOWN_API_VERSIONS: tuple[str, ...] = (
    "2022-03-01-preview",
    "2022-06-01-preview",
    "2022-12-01",
    "2023-03-15-preview",
    "2023-05-15",
    "2023-06-01-preview",
    "2023-07-01-preview",
    "2023-08-01-preview",
    "2023-09-01-preview",
    "2023-10-01-preview",
    "2023-12-01-preview",
    "2024-02-01",
    "2024-02-15-preview",
    "2024-03-01-preview",
    "2024-04-01-preview",
    "2024-05-01-preview",
    "2024-06-01",
    "2024-07-01-preview",
    "2024-08-01-preview",
    "2024-09-01-preview",
    "2024-10-01-preview",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)
_KNOWN = frozenset(KNOWN_API_VERSIONS)


@dataclass(frozen=True, order=True)
class ApiVersion:
    """A known dated api-version, ordered by date (a preview sorts after the GA of its day)."""

    date: str
    preview: bool

    @property
    def text(self) -> str:
        """The version as clients send it."""
        return f"{self.date}-preview" if self.preview else self.date

    def at_least(self, other: str) -> bool:
        """Whether this version is ``other`` or newer."""
        return self >= _split(other)

    @property
    def has_content_filter_annotations(self) -> bool:
        """Azure added prompt/choice content-filter annotations in 2023-06-01-preview."""
        return self.at_least("2023-06-01-preview")


def _split(text: str) -> ApiVersion:
    preview = text.endswith("-preview")
    return ApiVersion(date=text.removesuffix("-preview"), preview=preview)


def parse_api_version(text: str | None) -> ApiVersion | None:
    """The :class:`ApiVersion` for ``text``, or ``None`` when it is missing or unknown."""
    if text is None or text not in _KNOWN:
        return None
    return _split(text)
