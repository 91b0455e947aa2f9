"""The ``api-version`` values Azure OpenAI has published (wire reference §1.6).

Cerulean accepts every one of them, retired previews included, so that old client code runs
unchanged; anything else gets Azure's 404 ``Resource not found``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEPLOYMENTS_API_VERSIONS",
    "KNOWN_API_VERSIONS",
    "V1",
    "ApiVersion",
    "parse_api_version",
    "parse_v1_api_version",
]

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
# The old "authoring" versions that had GET /openai/deployments (wire reference §1.3).
DEPLOYMENTS_API_VERSIONS = frozenset(
    {"2022-03-01-preview", "2022-06-01-preview", "2022-12-01", "2023-03-15-preview"}
)


@dataclass(frozen=True, order=True)
class ApiVersion:
    """A known dated api-version, ordered by date (a preview sorts after the GA of its day)."""

    date: str
    preview: bool
    label: str | None = field(default=None, compare=False)  # "v1"/"preview" on /openai/v1

    @property
    def text(self) -> str:
        """The version as clients send it."""
        if self.label is not None:
            return self.label
        return f"{self.date}-preview" if self.preview else self.date

    @property
    def lists_deployments(self) -> bool:
        """Whether ``GET /openai/deployments`` existed in this version."""
        return self.text in DEPLOYMENTS_API_VERSIONS

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


# The /openai/v1 surface (§1.4) is newer than every dated version: it knows every parameter.
V1 = ApiVersion(date="9999-12-31", preview=False, label="v1")
_V1_PREVIEW = ApiVersion(date="9999-12-31", preview=True, label="preview")


def parse_v1_api_version(text: str | None) -> ApiVersion | None:
    """The version of a ``/openai/v1`` request: absent or ``v1`` is GA, ``preview`` the preview
    surface; anything else (a dated version included) is ``None``."""
    if text is None or text == "v1":
        return V1
    if text == "preview":
        return _V1_PREVIEW
    return None
