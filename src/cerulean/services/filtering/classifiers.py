"""The classifiers behind the content filter, one interface per kind of verdict.

- :class:`BlocklistMatcher`: a custom blocklist's items, exact phrases (case-insensitive, on word
  boundaries) and regular expressions, all compiled into one RE2 program: matching is linear in
  the text whatever the pattern (RE2 has no backtracking), so no user pattern can stall a worker.
- :class:`JailbreakDetector`: the prompt shield, a set of weighted patterns for the phrasings of
  prompt-injection and jailbreak attempts (heuristic; measured in docs/content-filtering.md).
- :class:`HarmClassifier`: the four harm categories, a logistic head over the packaged
  all-MiniLM-L6-v2 sentence embedding, trained on ``data/content_filter/eval.jsonl`` by
  ``bench/content_filter_eval.py`` (weights in ``harm_head.json`` beside this file).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import re2

from cerulean.engines.embedding import EmbeddingEngine
from cerulean.services.filtering.policy import CATEGORIES, Severity

__all__ = [
    "HEAD_FILE",
    "BlocklistMatcher",
    "HarmClassifier",
    "HarmHead",
    "JailbreakDetector",
    "PatternError",
    "TextClassifier",
    "WindowCache",
    "check_pattern",
    "severity_of",
]

HEAD_FILE = Path(__file__).with_name("harm_head.json")
MAX_PATTERN = 1000  # characters per blocklist item (Azure's limit)
_WORD = re.compile(r"\w")


class PatternError(ValueError):
    """A blocklist pattern RE2 cannot take (a backreference, a lookaround, bad syntax)."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20  # a pattern whose program is bigger is refused, not run
    return options


def _literal(phrase: str) -> str:
    """An exact phrase, case-insensitive, not inside a longer word."""
    body = re2.escape(phrase)
    left = r"\b" if _WORD.match(phrase[:1]) else ""
    right = r"\b" if _WORD.match(phrase[-1:]) else ""
    return f"(?i:{left}{body}{right})"


def check_pattern(pattern: str, is_regex: bool) -> None:
    """Raise :class:`PatternError` unless ``pattern`` can be a blocklist item."""
    if not pattern.strip():
        raise PatternError("The pattern must not be empty.")
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"The pattern is longer than {MAX_PATTERN} characters.")
    if is_regex:
        try:
            re2.compile(pattern, _options())
        except re2.error as exc:
            detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise PatternError(
                f"The regular expression {pattern!r} is not supported: {detail}. Patterns use "
                "RE2 syntax (no backreferences or lookaround), which matches in linear time."
            ) from None


class BlocklistMatcher:
    """One blocklist, its items in one linear-time program."""

    def __init__(self, name: str, items: Iterable[tuple[str, bool]]) -> None:
        self.name = name
        parts = [f"(?:{p})" if regex else _literal(p) for p, regex in items]
        self._program = re2.compile("|".join(parts), _options()) if parts else None

    def matches(self, text: str) -> bool:
        return self._program is not None and self._program.search(text) is not None


# -- the prompt shield ----------------------------------------------------------------------------

# (pattern, weight): a prompt is an attack when its weights add up to 1 or more.
_JAILBREAK_PATTERNS: tuple[tuple[str, float], ...] = (
    (
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|your|the)"
        r"\b.{0,30}\b(instructions?|rules|guidelines|prompts?|directives|directions|policies)",
        1.0,
    ),
    (r"\b(do anything now|DAN mode|developer mode|god mode|jailbreak mode)\b", 1.0),
    (r"\b(jailbreak(s|ed|ing)?|jailbroken)\b", 0.6),  # the word alone is a topic, not an attack
    (
        r"\b(no|without( any)?|free (of|from))\b.{0,20}\b(restrictions|filters|limits|guidelines|"
        r"rules|censorship|content polic(y|ies))\b",
        0.6,
    ),
    (r"\b(pretend|imagine|act( as if)?|roleplay|you are now|from now on)\b", 0.4),
    (r"\b(unfiltered|uncensored|unrestricted|amoral|unaligned)\b", 0.6),
    (
        r"\b(reveal|print|show|repeat|leak|output)\b.{0,20}\b(your|the)\b.{0,12}\b(system prompt|"
        r"hidden instructions|initial instructions|instructions you were given)\b",
        1.0,
    ),
    (
        r"\b(bypass|circumvent|disable|turn off|evade)\b.{0,30}\b(safety|filters?|guardrails|"
        r"moderation|restrictions|content policy)\b",
        1.0,
    ),
    (r"\bnew (instructions|rules|system prompt)\b", 0.5),
    (r"\b(stay in character|never refuse|must not refuse|cannot refuse|always comply)\b", 0.6),
)


class JailbreakDetector:
    """Prompt-attack detection by weighted phrasing patterns (case-insensitive, RE2)."""

    def __init__(self, patterns: Sequence[tuple[str, float]] = _JAILBREAK_PATTERNS) -> None:
        self._patterns = [(re2.compile(f"(?is){p}", _options()), w) for p, w in patterns]

    def score(self, text: str) -> float:
        return sum(w for program, w in self._patterns if program.search(text) is not None)

    def detect(self, text: str) -> bool:
        return self.score(text) >= 1.0


# -- the harm categories --------------------------------------------------------------------------


class TextClassifier(Protocol):
    """A harm classifier: each text's severity for each category it evaluates."""

    @property
    def categories(self) -> tuple[str, ...]: ...

    async def classify(self, texts: Sequence[str]) -> list[dict[str, Severity]]: ...


@dataclass(frozen=True)
class HarmHead:
    """A logistic head per category over sentence embeddings, and the severity bands."""

    categories: tuple[str, ...]
    weights: npt.NDArray[np.float32]  # (categories, dimensions)
    bias: npt.NDArray[np.float32]  # (categories,)
    bands: tuple[float, float, float]  # probability for low, medium, high
    embedding_model: str

    @classmethod
    def load(cls, path: Path = HEAD_FILE) -> HarmHead:
        data = json.loads(path.read_text())
        return cls(
            categories=tuple(data["categories"]),
            weights=np.asarray(data["weights"], dtype=np.float32),
            bias=np.asarray(data["bias"], dtype=np.float32),
            bands=(float(data["bands"][0]), float(data["bands"][1]), float(data["bands"][2])),
            embedding_model=data["embedding_model"],
        )

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        logits = vectors.astype(np.float64) @ self.weights.T.astype(np.float64) + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


def severity_of(probability: float, bands: tuple[float, float, float]) -> Severity:
    low, medium, high = bands
    if probability >= high:
        return "high"
    if probability >= medium:
        return "medium"
    if probability >= low:
        return "low"
    return "safe"


class WindowCache:
    """The head's probabilities of recently read windows, by their text (least recently used
    out first). A chat resends its whole conversation every turn, and an app its system prompt
    with every request: their windows are read once. Used on the event loop only."""

    def __init__(self, entries: int = 4096) -> None:
        self._entries = entries
        self._known: collections.OrderedDict[str, npt.NDArray[np.float64]] = (
            collections.OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    def get(self, window: str) -> npt.NDArray[np.float64] | None:
        known = self._known.get(window)
        if known is None:
            self.misses += 1
            return None
        self.hits += 1
        self._known.move_to_end(window)
        return known

    def put(self, window: str, probabilities: npt.NDArray[np.float64]) -> None:
        self._known[window] = probabilities
        self._known.move_to_end(window)
        while len(self._known) > self._entries:
            self._known.popitem(last=False)


class HarmClassifier:
    """The four harm categories from the packaged embedding model and the trained head."""

    def __init__(
        self, embedder: EmbeddingEngine, head: HarmHead, cache: WindowCache | None = None
    ) -> None:
        self._embedder = embedder
        self._head = head
        self._cache = cache if cache is not None else WindowCache(0)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c for c in self._head.categories if c in CATEGORIES)

    async def classify(self, texts: Sequence[str]) -> list[dict[str, Severity]]:
        # A text is read in windows of WINDOW characters (the last MAX_WINDOWS of them; one
        # batch for all windows not in the cache) and each category takes its worst window.
        pieces = [_windows(t) for t in texts]
        known: dict[str, npt.NDArray[np.float64]] = {}
        missing: list[str] = []
        for window in dict.fromkeys(w for ws in pieces for w in ws):
            cached = self._cache.get(window)
            if cached is None:
                missing.append(window)
            else:
                known[window] = cached
        if missing:
            embeddings = await self._embedder.embed(missing)
            for window, row in zip(
                missing, self._head.probabilities(embeddings.vectors), strict=True
            ):
                known[window] = row
                self._cache.put(window, row)
        out: list[dict[str, Severity]] = []
        for ws in pieces:
            worst = np.max(np.stack([known[w] for w in ws]), axis=0)
            out.append(
                {
                    c: severity_of(float(worst[j]), self._head.bands)
                    for j, c in enumerate(self._head.categories)
                }
            )
        return out


WINDOW = 512  # characters per window (about 128 tokens, well inside the model's 512)
MAX_WINDOWS = 8  # a longer text is judged by its last 4,096 characters


def _windows(text: str) -> list[str]:
    text = text.strip() or "."
    starts = range(max(len(text) - WINDOW * MAX_WINDOWS, 0), len(text), WINDOW)
    return [text[s : s + WINDOW] for s in starts] or ["."]
