"""The classifiers and policies as values: blocklist matching (RE2, exact phrases), the prompt
shield on the labelled set's attacks and benign prompts, severity bands, effective policies."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from cerulean.engines.fake_embeddings import FakeEmbedder
from cerulean.services.filtering.classifiers import (
    BlocklistMatcher,
    HarmClassifier,
    HarmHead,
    JailbreakDetector,
    PatternError,
    WindowCache,
    check_pattern,
    severity_of,
)
from cerulean.services.filtering.policy import BUILTIN_POLICIES, CategoryRule, effective_policy

DATA = Path(__file__).resolve().parents[3] / "data" / "content_filter" / "eval.jsonl"


def examples(label: str) -> list[str]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows if r["label"] == label]


def test_exact_phrases_match_whole_words_in_any_case() -> None:
    matcher = BlocklistMatcher("b", [("Zanzibar", False), ("a.b", False)])
    assert matcher.matches("off to ZANZIBAR!")
    assert not matcher.matches("zanzibarian")
    assert matcher.matches("x a.b y") and not matcher.matches("aXb")  # literal, not a regex


def test_regex_items_and_unsupported_patterns() -> None:
    matcher = BlocklistMatcher("b", [(r"\bfoo\d+", True)])
    assert matcher.matches("call foo42 now") and not matcher.matches("food")
    for pattern in (r"(a)\1", r"(?=a)", r"(?<!a)b", "(", "x" * 1001, "  "):
        with pytest.raises(PatternError):
            check_pattern(pattern, True)
    check_pattern("(a+)+$", True)  # fine: RE2 runs it in linear time


def test_hostile_patterns_run_in_linear_time() -> None:
    matcher = BlocklistMatcher(
        "b", [(r"(a+)+$", True), (r"(a|aa)+c", True), (r"^(\w+\s?)*$", True)]
    )
    started = time.monotonic()
    assert not matcher.matches("a" * 100_000 + "!")
    assert time.monotonic() - started < 1.0


def test_the_shield_on_the_labelled_set() -> None:
    shield = JailbreakDetector()
    attacks = examples("jailbreak")
    caught = sum(shield.detect(t) for t in attacks)
    assert caught / len(attacks) >= 0.9
    benign = examples("none")
    assert sum(shield.detect(t) for t in benign) == 0


def test_severity_bands_and_thresholds() -> None:
    bands = (0.3, 0.5, 0.8)
    assert [severity_of(p, bands) for p in (0.1, 0.3, 0.6, 0.9)] == [
        "safe",
        "low",
        "medium",
        "high",
    ]
    medium = CategoryRule()
    assert not medium.filters("safe") and not medium.filters("low") and medium.filters("medium")
    assert CategoryRule(threshold="low").filters("low")
    assert not CategoryRule(threshold="high").filters("medium")
    assert not CategoryRule(blocking=False).filters("high")  # annotate only


def test_effective_policy_overrides_its_base() -> None:
    policy = effective_policy(
        "p",
        {
            "basePolicyName": "Microsoft.DefaultV2",
            "mode": "Asynchronous_filter",
            "contentFilters": [
                {
                    "name": "Violence",
                    "enabled": True,
                    "severityThreshold": "High",
                    "blocking": True,
                    "source": "Completion",
                },
                {"name": "Jailbreak", "enabled": False, "blocking": False, "source": "Prompt"},
            ],
            "customBlocklists": [{"blocklistName": "a", "blocking": True, "source": "Prompt"}],
            "completionBlocklists": [{"blocklistName": "b", "blocking": True}],
        },
    )
    assert policy.asynchronous
    assert policy.completion["violence"].threshold == "high"
    assert policy.prompt["violence"].threshold == "medium"  # from the base
    assert not policy.prompt["jailbreak"].enabled
    assert [u.name for u in policy.prompt_blocklists] == ["a"]
    assert [u.name for u in policy.completion_blocklists] == ["b"]
    assert BUILTIN_POLICIES["Microsoft.DefaultV2"].prompt["jailbreak"].enabled


def test_the_shipped_head_loads() -> None:
    head = HarmHead.load()
    assert head.categories == ("hate", "sexual", "violence", "self_harm")
    assert head.weights.shape == (4, 384)


def test_windows_already_read_come_from_the_cache() -> None:
    """A conversation resent with one more turn, or a repeated system prompt: only windows
    not read before go to the embedding model, and the verdicts do not change."""
    head = HarmHead.load()
    embedder = FakeEmbedder(dimensions=384, context_length=512)
    embedder.load()
    cache = WindowCache(entries=8)
    classifier = HarmClassifier(embedder, head, cache)
    system, first, second = "You are a helpful assistant.", "Hello there.", "Tell me more."
    plain = asyncio.run(HarmClassifier(embedder, head).classify([system, first]))
    embedder.calls.clear()
    assert asyncio.run(classifier.classify([system, first])) == plain
    assert embedder.calls == [[system, first]]
    asyncio.run(classifier.classify([system, first, second]))  # the next turn
    assert embedder.calls[-1] == [second]
    assert (cache.hits, cache.misses) == (2, 3)
    for i in range(10):  # least recently used windows leave first
        asyncio.run(classifier.classify([f"filler {i}"]))
    asyncio.run(classifier.classify([system]))
    assert embedder.calls[-1] == [system]
