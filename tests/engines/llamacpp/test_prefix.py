"""Prefix-cache bookkeeping: matching, the sliding-window rule, LRU eviction."""

from __future__ import annotations

import random

import pytest

from cerulean.engines.llamacpp.prefix import (
    CachedPrefix,
    PrefixCache,
    SeqPool,
    common_prefix,
    reusable,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 3, 4], 3),
        ([1, 2, 3], [1, 9, 3], 1),
        ([5], [6], 0),
    ],
)
def test_common_prefix(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix(a, b) == expected
    assert common_prefix(b, a) == expected


def test_common_prefix_matches_a_plain_loop_on_long_lists() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = [rng.randrange(3) for _ in range(rng.randrange(0, 3000))]
        cut = rng.randrange(0, len(a) + 1)
        b = a[:cut] + [rng.randrange(3) for _ in range(rng.randrange(0, 50))]
        expected = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if expected is None:
            expected = min(len(a), len(b))
        assert common_prefix(a, b) == expected


def test_reusable_needs_the_window_before_the_cut() -> None:
    # Continuing at position 1000 with a 512-token window needs positions 489..999.
    assert reusable(1000, pos_min=0, n_swa=512)
    assert reusable(1000, pos_min=489, n_swa=512)
    assert not reusable(1000, pos_min=490, n_swa=512)
    assert reusable(100, pos_min=0, n_swa=512)
    # Without sliding-window layers every cell stays, so only a complete sequence qualifies.
    assert reusable(1000, pos_min=0, n_swa=0)
    assert not reusable(1000, pos_min=3, n_swa=0)
    assert not reusable(0, pos_min=0, n_swa=512)
    assert not reusable(10, pos_min=-1, n_swa=512)


def test_matches_longest_first_and_ignores_short_overlaps() -> None:
    cache = PrefixCache(4, min_tokens=3)
    cache.add(CachedPrefix(1, [1, 2, 3, 4]))
    cache.add(CachedPrefix(2, [1, 2, 3, 4, 5, 6]))
    cache.add(CachedPrefix(3, [1, 2]))
    found = cache.matches([1, 2, 3, 4, 5, 9])
    assert [(k, e.seq) for k, e in found] == [(5, 2), (4, 1)]


def test_lru_eviction_order_follows_use() -> None:
    cache = PrefixCache(2, min_tokens=1)
    first, second = CachedPrefix(1, [1]), CachedPrefix(2, [2])
    cache.add(first)
    cache.add(second)
    assert cache.over(1)
    first.touch()
    assert cache.pop_lru() is second
    assert cache.pop_lru() is first
    assert cache.pop_lru() is None


def test_wanted_refuses_duplicates_and_short_prefixes() -> None:
    cache = PrefixCache(2, min_tokens=3)
    assert not cache.wanted([1, 2])
    assert cache.wanted([1, 2, 3])
    cache.add(CachedPrefix(0, [1, 2, 3]))
    assert not cache.wanted([1, 2, 3])
    assert cache.tokens == 3
    assert not PrefixCache(0).wanted(list(range(100)))


def test_seq_pool_hands_out_every_id_once() -> None:
    pool = SeqPool(3)
    taken = [pool.take(), pool.take(), pool.take()]
    assert sorted(taken) == [0, 1, 2]  # type: ignore[type-var]
    assert pool.take() is None
    pool.give(1)
    assert len(pool) == 1 and pool.take() == 1


def test_content_ends_locates_each_message_in_any_format() -> None:
    from cerulean.engines.base import ChatMessage
    from cerulean.engines.llamacpp.engine import _content_ends

    messages = [
        ChatMessage("system", " Be brief. "),
        ChatMessage("user", "Hi"),
        ChatMessage("user", ""),
    ]
    gemma = "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    ends = _content_ends(messages, gemma)
    assert gemma[: ends[0]].endswith("Be brief.") and gemma[: ends[1]].endswith("Hi")
    assert ends[2] == 0
    assert _content_ends([ChatMessage("user", "absent")], "System: x") == [0]


def test_token_budget_counts_every_entry() -> None:
    cache = PrefixCache(10, max_tokens=100, min_tokens=1)
    cache.add(CachedPrefix(0, list(range(60))))
    assert not cache.over(40)
    assert cache.over(41)
    assert not cache.wanted(list(range(101)))  # larger than the whole budget
