"""Bookkeeping of the KV cache's reusable prefixes (pure Python; no llama.cpp calls).

A *cached prefix* is a sequence id of the shared KV cache that holds exactly the tokens
``tokens[0:len]`` and nothing after them. A new prompt that starts with (part of) those tokens
gets them by copying the sequence's cells — a metadata operation in a unified cache — and only
computes the rest. Entries are made where prompts are likely to be shared: where a prompt's first
message (the system prompt) and its history end, where a whole prompt ends, and where a finished
answer ends (the next turn of the chat starts with it). The least recently used entry goes first
when sequence ids or KV cells run short.

Models with sliding-window attention (Gemma 3) keep only the last ``n_swa`` positions of a
sequence in their SWA layers; continuing from position ``k`` needs positions ``k - n_swa + 1``
onward, so :func:`reusable` checks what the cache still holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["CachedPrefix", "PrefixCache", "SeqPool", "common_prefix", "reusable"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists.

    Binary search over slice comparisons: each comparison runs in C, so this stays fast for
    thousands of tokens where a Python loop over tokens would not.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def reusable(k: int, pos_min: int, n_swa: int) -> bool:
    """Whether a sequence whose oldest cell is ``pos_min`` can be continued at position ``k``."""
    if k <= 0 or pos_min < 0:
        return False
    if n_swa <= 0:
        return pos_min == 0
    return pos_min <= max(0, k - n_swa + 1)


class SeqPool:
    """The free sequence ids of the context."""

    def __init__(self, n_seq: int) -> None:
        self._free = list(range(n_seq - 1, -1, -1))

    def take(self) -> int | None:
        return self._free.pop() if self._free else None

    def give(self, seq: int) -> None:
        self._free.append(seq)

    def __len__(self) -> int:
        return len(self._free)


_clock = itertools.count()


@dataclass(eq=False)
class CachedPrefix:
    """One sequence id holding ``tokens`` at positions ``0..len(tokens)-1``."""

    seq: int
    tokens: list[int]
    used: int = field(default_factory=lambda: next(_clock))

    def touch(self) -> None:
        self.used = next(_clock)


class PrefixCache:
    """At most ``capacity`` cached prefixes of ``max_tokens`` tokens in all (shared cells counted
    once per entry), least recently used evicted first.

    The token budget matters beyond memory: in a unified KV cache every decode step attends over
    the cells up to the highest one in use, so stale prefixes slow every running request down.
    """

    def __init__(self, capacity: int, *, max_tokens: int = 1 << 62, min_tokens: int = 16) -> None:
        self.capacity = capacity
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self._entries: list[CachedPrefix] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CachedPrefix]:
        return iter(list(self._entries))

    @property
    def tokens(self) -> int:
        return sum(len(e.tokens) for e in self._entries)

    def matches(self, prompt: Sequence[int]) -> list[tuple[int, CachedPrefix]]:
        """Entries sharing at least ``min_tokens`` with ``prompt``, longest match first."""
        found = []
        for entry in self._entries:
            k = common_prefix(entry.tokens, prompt)
            if k >= self.min_tokens:
                found.append((k, entry))
        found.sort(key=lambda pair: (-pair[0], -pair[1].used))
        return found

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether an entry already holds exactly ``tokens``."""
        n = len(tokens)
        return any(len(e.tokens) == n and e.tokens == tokens for e in self._entries)

    def wanted(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` is worth an entry: long enough, within budget, not cached yet."""
        return (
            self.min_tokens <= len(tokens) <= self.max_tokens
            and self.capacity > 0
            and not self.holds(tokens)
        )

    def add(self, entry: CachedPrefix) -> None:
        self._entries.append(entry)

    def over(self, adding: int) -> bool:
        """Whether one more entry of ``adding`` tokens needs an eviction first."""
        return len(self._entries) >= self.capacity or self.tokens + adding > self.max_tokens

    def pop_lru(self) -> CachedPrefix | None:
        """Remove and return the least recently used entry (the caller frees its cells)."""
        if not self._entries:
            return None
        oldest = min(self._entries, key=lambda e: e.used)
        self._entries.remove(oldest)
        return oldest

    def drop(self, entry: CachedPrefix) -> None:
        if entry in self._entries:
            self._entries.remove(entry)
