"""Who holds which KV cells: the context's sequence ids, and the cached prefixes among them.

The loop thread's single owner of llama.cpp's memory operations (``seq_rm``/``seq_cp``): slots
take sequence ids here and give them back, prompts copy cached prefixes from here, and when ids
or cells run short the least recently used cached prefix is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cerulean.engines.llamacpp.native import NativeContext
from cerulean.engines.llamacpp.prefix import CachedPrefix, PrefixCache, SeqPool, reusable
from cerulean.errors import EngineError

__all__ = ["ADOPT_MIN_TOKENS", "KvSpace"]

# Finished answers shorter than this are not kept for the chat's next turn.
ADOPT_MIN_TOKENS = 128


class KvSpace:
    """Sequence ids of one context; at most ``entries`` of them, ``tokens`` long in all, are kept
    as cached prefixes."""

    def __init__(self, ctx: NativeContext, *, n_swa: int, entries: int, tokens: int) -> None:
        self._ctx = ctx
        self._n_swa = n_swa
        self._pool = SeqPool(ctx.config.n_seq_max)
        self.cache = PrefixCache(entries, max_tokens=tokens)

    def take(self) -> int:
        """A free, empty sequence id (dropping cached prefixes if need be)."""
        seq = self._pool.take()
        while seq is None:
            if not self.evict():  # slots + cache entries never exceed the ids; keep it loud
                raise EngineError("no free sequence id")
            seq = self._pool.take()
        return seq

    def give(self, seq: int) -> None:
        """Forget ``seq``'s cells and free its id."""
        self._ctx.seq_rm(seq)
        self._pool.give(seq)

    def evict(self) -> bool:
        """Drop the least recently used cached prefix; False when there is none."""
        entry = self.cache.pop_lru()
        if entry is None:
            return False
        self.give(entry.seq)
        return True

    def continuable(self, seq: int, k: int) -> bool:
        """Whether ``seq`` still holds what a sequence continuing at position ``k`` needs."""
        return reusable(k, self._ctx.seq_pos_min(seq), self._n_swa)

    def best_cached(self, prompt: Sequence[int], floor: Callable[[int], int]) -> tuple[int, int]:
        """``(k, seq)``: the longest usable cached prefix of ``prompt``, cut back by ``floor``.

        ``(0, -1)`` when none; the last prompt token is never taken (its logits are needed).
        """
        limit = len(prompt) - 1
        for k, entry in self.cache.matches(prompt):
            k = floor(min(k, limit))
            if k > 0 and self.continuable(entry.seq, k):
                entry.touch()
                return k, entry.seq
        return 0, -1

    def copy(self, source: int, target: int, k: int) -> None:
        """Make ``target`` hold exactly ``source``'s positions ``0..k-1`` (shared cells)."""
        self._ctx.seq_rm(target)
        if k > 0 and source >= 0:
            self._ctx.seq_cp(source, target, 0, k)

    def pin(self, seq: int, tokens: list[int]) -> None:
        """Keep ``tokens`` (positions ``0..len-1`` of ``seq``) as a cached prefix."""
        if not self.cache.wanted(tokens):
            return
        while self.cache.over(len(tokens)) and self.evict():
            pass
        entry = self._pool.take()
        if entry is not None:
            self._ctx.seq_cp(seq, entry, 0, len(tokens))
            self.cache.add(CachedPrefix(entry, tokens))

    def adopt(self, seq: int, tokens: list[int]) -> bool:
        """Turn a finished sequence holding exactly ``tokens`` into a cached prefix.

        Only long ones: a short chat costs little to compute again, while every finished short
        chat kept would leave its own cells scattered through the cache (see :class:`KvSpace`).
        """
        if len(tokens) < ADOPT_MIN_TOKENS or not self.cache.wanted(tokens):
            return False
        while self.cache.over(len(tokens)) and self.evict():
            pass
        self.cache.add(CachedPrefix(seq, tokens))
        return True

    def clear(self) -> None:
        """Forget every cached prefix and every cell (after a failed decode)."""
        for entry in list(self.cache):
            self.cache.drop(entry)
            self._pool.give(entry.seq)
        self._ctx.clear()
