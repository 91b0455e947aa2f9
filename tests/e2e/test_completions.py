"""Legacy completions and chat logprobs through the real SDKs, against a real server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import openai
import pytest
from openai import AzureOpenAI

from tests.e2e.conftest import Server, run_program

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


def client(server: Server, version: str = "2024-10-21") -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version=version, max_retries=0
    )


def test_plain_completion(server: Server) -> None:
    completion = client(server).completions.create(
        model="gpt-35-turbo", prompt=PROMPT, temperature=0
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 16
    assert completion.model == "gemma-3-270m"


def test_streaming_matches_the_plain_answer(server: Server) -> None:
    sdk = client(server)
    plain = sdk.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=12, temperature=0)
    stream = sdk.completions.create(
        model="gpt-4", prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_echo_logprobs_n_and_a_prompt_list(server: Server) -> None:
    sdk = client(server)
    echoed = sdk.completions.create(
        model="gpt-4", prompt=PROMPT, max_tokens=3, echo=True, temperature=0
    )
    assert echoed.choices[0].text.startswith(PROMPT)
    scored = sdk.completions.create(
        model="gpt-4", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3
    )
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text
    assert logprobs.text_offset is not None and logprobs.text_offset[0] == len(PROMPT)
    assert logprobs.top_logprobs is not None
    rows = zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True)
    for token, value, top in rows:
        assert value <= 0 and top[token] == value and value == max(top.values())
    scored_prompt = sdk.completions.create(
        model="gpt-4", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
    )
    prompt_logprobs = scored_prompt.choices[0].logprobs
    assert prompt_logprobs is not None and prompt_logprobs.tokens is not None
    assert "".join(prompt_logprobs.tokens) == scored_prompt.choices[0].text == PROMPT
    assert prompt_logprobs.token_logprobs is not None
    assert all(value <= 0 for value in prompt_logprobs.token_logprobs)
    assert scored_prompt.usage is not None and scored_prompt.usage.completion_tokens == 0
    several = sdk.completions.create(
        model="gpt-4", prompt=["One, two,", "Red, green,"], n=2, max_tokens=4, temperature=0
    )
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert several.choices[0].text == several.choices[1].text  # greedy: same answer twice
    assert several.choices[0].text != several.choices[2].text


def test_best_of_and_errors(server: Server) -> None:
    sdk = client(server)
    best = sdk.completions.create(
        model="gpt-4", prompt=PROMPT, max_tokens=4, best_of=3, n=1, seed=5, temperature=1.0
    )
    assert len(best.choices) == 1 and best.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="gpt-4", prompt=PROMPT, suffix="!")
    assert caught.value.param == "suffix"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=2, best_of=21)
    assert too_many.value.param == "best_of"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.completions.create(model="gpt-4", prompt="word " * 5000, max_tokens=16)
    assert too_long.value.code == "context_length_exceeded"


def test_chat_logprobs_sync_and_stream(server: Server) -> None:
    sdk = client(server)
    messages = [{"role": "user", "content": "Say hello."}]
    completion = sdk.chat.completions.create(
        model="gpt-4",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    for item in choice.logprobs.content:
        assert len(item.top_logprobs) == 2 and item.logprob == item.top_logprobs[0].logprob
        assert item.bytes is not None and bytes(item.bytes).decode("utf-8", "replace")
        assert math.exp(item.logprob) <= 1.0
    stream = sdk.chat.completions.create(
        model="gpt-4",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        logprobs=True,
        stream=True,
    )
    streamed = [
        token.token
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for token in chunk.choices[0].logprobs.content
    ]
    assert streamed == [item.token for item in choice.logprobs.content]


def test_openai_v028_completions(server: Server, venv028: Path) -> None:
    seen = json.loads(run_program(venv028, "completions_v028.py", server))
    assert seen["text"] and seen["object"] == "text_completion"
    assert seen["stream_text"] == seen["text"]
    assert seen["logprob_tokens"] >= 1 and seen["choices"] == 2
    assert seen["suffix_error"] == ["InvalidRequestError", 400]
