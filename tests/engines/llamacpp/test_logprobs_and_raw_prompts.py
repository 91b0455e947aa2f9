"""Log probabilities and raw (completions) prompts with the real model."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from cerulean.engines.base import (
    ChatMessage,
    EngineChunk,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
)
from cerulean.engines.llamacpp import LlamaCppEngine
from cerulean.errors import ContextLengthExceeded, InvalidRequest
from tests.engines.llamacpp.test_batching import make_engine

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def engine(model_path: Path) -> Iterator[LlamaCppEngine]:
    built = make_engine(model_path, n_ctx=256)
    yield built
    asyncio.run(built.aclose())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cerulean.packaged.gemma import ensure_embedded_model

    return ensure_embedded_model(Path(tmp_path_factory.mktemp("models")), progress=False)


@dataclass
class Result:
    texts: dict[int, str] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    finals: dict[int, EngineChunk] = field(default_factory=dict)
    chunks: list[EngineChunk] = field(default_factory=list)


def run(engine: LlamaCppEngine, request: GenerationRequest) -> Result:
    async def go() -> Result:
        result = Result()
        async for chunk in await engine.generate(request):
            result.chunks.append(chunk)
            result.texts[chunk.index] = result.texts.get(chunk.index, "") + chunk.text
            result.logprobs.setdefault(chunk.index, []).extend(chunk.logprobs)
            if chunk.finish_reason:
                result.finals[chunk.index] = chunk
        return result

    return asyncio.run(go())


def raw(
    prompt: str | tuple[int, ...],
    n: int = 1,
    echo: bool = False,
    suffix: str | None = None,
    **params: Any,
) -> GenerationRequest:
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 8)
    request = GenerationRequest((), SamplingParams(**params), n=n, prompt=prompt, echo=echo)
    return replace(request, suffix=suffix)


def test_greedy_tokens_are_the_likeliest_and_probabilities_add_up(engine: LlamaCppEngine) -> None:
    result = run(engine, raw(PROMPT, logprobs=5, max_tokens=6))
    entries = result.logprobs[0]
    assert len(entries) == result.finals[0].completion_tokens == 6
    for entry in entries:
        assert entry.logprob is not None and entry.logprob <= 0
        values = [top.logprob for top in entry.top]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0], abs=1e-6)  # greedy: the max
        assert entry.token == entry.top[0].token
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
    assert b"".join(e.bytes for e in entries).decode() == result.texts[0]


def test_logprobs_do_not_change_the_answer(engine: LlamaCppEngine) -> None:
    plain = run(engine, raw(PROMPT))
    scored = run(engine, raw(PROMPT, logprobs=2))
    assert plain.texts == scored.texts and plain.logprobs[0] == []


def test_logprobs_describe_the_model_not_the_bias(engine: LlamaCppEngine) -> None:
    first = run(engine, raw(PROMPT, logprobs=1, max_tokens=1)).logprobs[0][0]
    banned = engine.tokenize_raw(first.token).tokens[-1]
    biased = run(engine, raw(PROMPT, logprobs=3, max_tokens=1, logit_bias=((banned, -100.0),)))
    entry = biased.logprobs[0][0]
    assert entry.token != first.token
    assert entry.top[0].token == first.token  # still the model's likeliest
    assert entry.top[0].logprob == pytest.approx(first.logprob, abs=1e-5)


def test_raw_prompt_keeps_whitespace_and_skips_the_chat_template(engine: LlamaCppEngine) -> None:
    result = run(engine, raw(PROMPT, max_tokens=4))
    text = result.texts[0]
    assert text and text[0] == " "  # " Paris" keeps its space, as OpenAI's completions do
    assert result.finals[0].prompt_tokens == len(engine.tokenize_raw(PROMPT).tokens)
    chat = engine.tokenize_prompt((ChatMessage("user", PROMPT),)).tokens
    assert len(chat) > result.finals[0].prompt_tokens


def test_token_ids_are_the_same_prompt_as_their_text(engine: LlamaCppEngine) -> None:
    tokens = engine.tokenize_raw(PROMPT).tokens
    without_bos = tuple(tokens[1:])  # the engine puts BOS back
    assert run(engine, raw(without_bos)).texts == run(engine, raw(PROMPT)).texts
    assert run(engine, raw(tuple(tokens))).texts == run(engine, raw(PROMPT)).texts


def test_echo_comes_first_in_every_choice(engine: LlamaCppEngine) -> None:
    result = run(engine, raw(PROMPT, n=2, echo=True, temperature=1.0, seed=3))
    for index in (0, 1):
        assert result.texts[index].startswith(PROMPT)
    ids = tuple(engine.tokenize_raw(PROMPT).tokens)
    assert run(engine, raw(ids, echo=True)).texts[0].startswith(PROMPT)


def test_max_tokens_zero_generates_nothing(engine: LlamaCppEngine) -> None:
    result = run(engine, raw(PROMPT, echo=True, max_tokens=0))
    assert result.texts == {0: PROMPT}
    assert result.finals[0].finish_reason == "length"
    assert result.finals[0].completion_tokens == 0


def test_echo_with_logprobs_scores_the_prompt(engine: LlamaCppEngine) -> None:
    plain = run(engine, raw(PROMPT, logprobs=2, max_tokens=3))
    echoed = run(engine, raw(PROMPT, logprobs=2, max_tokens=3, echo=True, n=2))
    for index in (0, 1):
        entries = echoed.logprobs[index]
        shown = b"".join(e.bytes for e in entries).decode()
        assert shown == echoed.texts[index] == PROMPT + plain.texts[0]
        prompt_part = entries[: len(entries) - 3]
        # Gemma's BOS is not listed, so the first prompt token has a real log probability.
        assert all(e.logprob is not None and e.logprob <= 0 for e in prompt_part)
        assert all(len(e.top) == 2 for e in prompt_part)
        assert [e.token for e in entries[-3:]] == [e.token for e in plain.logprobs[0]]


def test_prompt_scores_agree_with_generation(engine: LlamaCppEngine) -> None:
    first = run(engine, raw(PROMPT, logprobs=0, max_tokens=1)).logprobs[0][0]
    scored = run(engine, raw(PROMPT + first.token, logprobs=0, max_tokens=0, echo=True))
    assert scored.finals[0].completion_tokens == 0
    last = scored.logprobs[0][-1]
    assert last.token == first.token
    assert last.logprob == pytest.approx(first.logprob, abs=1e-3)


def test_a_long_scored_prompt_takes_several_steps(engine: LlamaCppEngine) -> None:
    long = " ".join(["one two three four five six seven eight nine ten"] * 8)
    tokens = len(engine.tokenize_raw(long).tokens)
    assert tokens > 64  # more positions than the spare logits rows of one step
    result = run(engine, raw(long, logprobs=0, max_tokens=0, echo=True))
    assert len(result.logprobs[0]) == tokens - 1  # every token but the BOS
    repeated = result.logprobs[0][-10:]
    assert all(e.logprob is not None and e.logprob > -1.0 for e in repeated)  # learnt in context


def test_bad_token_ids_and_long_prompts_are_400s(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run(engine, raw((1, 10**7)))
    assert caught.value.param == "prompt"
    with pytest.raises(ContextLengthExceeded) as overflow:
        run(engine, raw("word " * 300, max_tokens=16))
    assert overflow.value.param == "prompt" and "in your prompt" in overflow.value.message


def test_stop_tokens_are_not_in_the_logprobs(engine: LlamaCppEngine) -> None:
    full = run(engine, raw(PROMPT, max_tokens=8)).texts[0]
    stop = full.strip().split()[-1] if full.strip() else "\n"
    result = run(engine, raw(PROMPT, max_tokens=8, stop=(stop,), logprobs=0))
    text = result.texts[0]
    assert stop not in text
    shown = b"".join(e.bytes for e in result.logprobs[0]).decode("utf-8", errors="replace")
    assert shown.startswith(text) and len(shown) <= len(text) + len(stop)


def test_best_of_candidates_differ_and_carry_logprobs(engine: LlamaCppEngine) -> None:
    result = run(engine, raw(PROMPT, n=3, temperature=1.0, seed=11, logprobs=0))
    assert len(result.finals) == 3
    assert all(result.logprobs[i] for i in range(3))
    assert len({tuple(e.token for e in result.logprobs[i]) for i in range(3)}) > 1


@pytest.fixture(scope="module")
def fim_engine(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppEngine]:
    """The embedded weights with Gemma's <unused0..2> named as FIM prefix/suffix/middle tokens."""
    target = tmp_path_factory.mktemp("fim") / "gemma-fim.gguf"
    command = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(model_path), str(target)]
    for role, token in (("fim_pre", 6), ("fim_suf", 7), ("fim_mid", 8)):
        command += ["--special-token-by-id", role, str(token)]
    subprocess.run([*command, "--force"], check=True, capture_output=True, timeout=300)
    built = make_engine(target, n_ctx=256)
    yield built
    asyncio.run(built.aclose())


def test_suffix_lays_out_fill_in_the_middle(fim_engine: LlamaCppEngine) -> None:
    plan = fim_engine.tokenize_raw("def add(a, b):", suffix="\n\nprint(add(1, 2))")
    prefix = fim_engine.tokenize_raw("def add(a, b):").tokens[1:]
    assert plan.tokens[:3] == [2, 6, prefix[0]]  # BOS, FIM prefix, the prompt
    assert plan.tokens[2 + len(prefix)] == 7 and plan.tokens[-1] == 8
    result = run(fim_engine, raw("def add(a, b):", suffix="\n\nprint(add(1, 2))", max_tokens=4))
    assert result.finals[0].prompt_tokens == len(plan.tokens)


def test_suffix_without_fim_tokens_is_a_400(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run(engine, raw(PROMPT, suffix="."))
    assert caught.value.param == "suffix" and caught.value.code == "unsupported_parameter"
