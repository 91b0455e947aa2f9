"""The llama.cpp engine with the real embedded model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerulean.engines.base import ChatMessage, GenerationRequest, SamplingParams
from cerulean.engines.llamacpp import LlamaCppEngine
from cerulean.engines.llamacpp.build import EMBEDDED_DEFAULT_MAX_TOKENS, build_default_engine
from cerulean.errors import ContextLengthExceeded
from cerulean.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

HELLO = (ChatMessage("user", "Tell me a long story about the sea."),)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    home = Path(tmp_path_factory.mktemp("engine"))
    built, _ = build_default_engine(Settings(home=home, n_ctx=512), progress=False)
    built.load()
    yield built
    asyncio.run(built.aclose())


async def collect(engine: LlamaCppEngine, params: SamplingParams) -> tuple[str, str | None, int]:
    generation = await engine.generate(GenerationRequest(HELLO, params))
    text, finish, tokens = "", None, 0
    async for chunk in generation:
        text += chunk.text
        if chunk.finish_reason:
            finish, tokens = chunk.finish_reason, chunk.completion_tokens
    return text, finish, tokens


def test_embedded_defaults(engine: LlamaCppEngine) -> None:
    assert engine.info.name == "gemma-3-270m"
    assert engine.info.default_max_tokens == EMBEDDED_DEFAULT_MAX_TOKENS
    assert engine.prompt_format.name == "transcript-paragraph"


def test_max_tokens_gives_length(engine: LlamaCppEngine) -> None:
    _, finish, tokens = asyncio.run(
        collect(engine, SamplingParams(temperature=0, max_tokens=1, stop=()))
    )
    assert (finish, tokens) in (("length", 1), ("stop", 0), ("stop", 1))


def test_seed_makes_sampling_repeatable(engine: LlamaCppEngine) -> None:
    params = SamplingParams(temperature=1.0, seed=42, max_tokens=12)
    assert asyncio.run(collect(engine, params)) == asyncio.run(collect(engine, params))


def test_user_stop_string_is_never_emitted(engine: LlamaCppEngine) -> None:
    text, _, _ = asyncio.run(collect(engine, SamplingParams(temperature=0, max_tokens=40)))
    words = text.split()
    if len(words) < 3:
        pytest.skip("answer too short to cut")
    cut = words[2]
    stopped, finish, _ = asyncio.run(
        collect(engine, SamplingParams(temperature=0, max_tokens=40, stop=(cut,)))
    )
    assert cut not in stopped and finish == "stop"


def test_context_overflow_is_refused_before_any_output(engine: LlamaCppEngine) -> None:
    long = (ChatMessage("user", "word " * 600),)
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(engine.generate(GenerationRequest(long)))
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(engine.generate(GenerationRequest(HELLO, SamplingParams(max_tokens=10_000))))


def test_cancel_frees_the_worker_at_once(engine: LlamaCppEngine) -> None:
    async def scenario() -> float:
        first = await engine.generate(
            GenerationRequest(HELLO, SamplingParams(max_tokens=400, stop=("@@",)))
        )
        iterator = first.__aiter__()
        await iterator.__anext__()
        await first.aclose()
        started = time.monotonic()
        second = await engine.generate(GenerationRequest(HELLO, SamplingParams(max_tokens=1)))
        async for _ in second:
            pass
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0


def test_gpu_layers_default_to_all_only_with_a_gpu_build(engine: LlamaCppEngine) -> None:
    from cerulean.engines.llamacpp.engine import ALL_LAYERS
    from cerulean.engines.llamacpp.native import gpu_offload_supported

    assert engine.spec.n_gpu_layers is None  # the setting's default
    assert engine.gpu_layers == (ALL_LAYERS if gpu_offload_supported() else 0)
