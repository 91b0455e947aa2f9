"""openai 1.x (sync, async, streaming) against a real server with the real model."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI

from tests.conformance.recorder import RECORDER, recording_async_client, recording_client
from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello."},
]


def client(server: Server, version: str = "2024-10-21", **kwargs: object) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key=server.key1,
        api_version=version,
        max_retries=0,
        http_client=recording_client(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_sync_completion_and_headers(server: Server) -> None:
    raw = client(server).chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["x-ms-deployment-name"] == "gpt-4"
    assert completion._request_id == raw.headers["apim-request-id"]
    assert completion.model == "gemma-3-270m"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 8
    assert completion.prompt_filter_results[0]["prompt_index"] == 0  # type: ignore[attr-defined]
    assert completion.system_fingerprint is not None
    assert completion.system_fingerprint.startswith("fp_")


def test_sdk_responses_reach_the_conformance_check(server: Server) -> None:
    before = RECORDER.total
    client(server).chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert RECORDER.total == before + 1  # validated when this test ends (tests/conftest.py)


def test_streaming(server: Server) -> None:
    stream = client(server).chat.completions.create(
        model="gpt-35-turbo",
        messages=MESSAGES,
        max_tokens=16,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices == []  # Azure's prompt-filter chunk comes first
    assert chunks[1].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 16
    assert text.strip() or finishes == ["stop"]


def test_async_client_concurrent_requests(server: Server) -> None:
    async def main() -> list[str]:
        aclient = AsyncAzureOpenAI(
            azure_endpoint=server.endpoint,
            api_key=server.key1,
            api_version="2024-06-01",
            max_retries=0,
            http_client=recording_async_client(),
        )
        calls = [
            aclient.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=6, seed=i)  # type: ignore[arg-type]
            for i in range(3)
        ]
        results = await asyncio.gather(*calls)
        await aclient.close()
        return [r.choices[0].finish_reason or "" for r in results]

    assert all(f in ("stop", "length") for f in asyncio.run(main()))


def test_sdk_errors(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.code == "DeploymentNotFound"
    with pytest.raises(openai.NotFoundError) as version:
        client(server, version="2099-01-01").chat.completions.create(
            model="gpt-4", messages=MESSAGES
        )  # type: ignore[arg-type]
    assert version.value.code == "404"
    bad_key = AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key="0" * 32,
        api_version="2024-10-21",
        max_retries=0,
        http_client=recording_client(),
    )
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="gpt-4", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(model="gpt-4", messages=MESSAGES, temperature=7)  # type: ignore[arg-type]
    assert "temperature" in str(bad.value)


def test_leading_double_slash_over_a_real_socket(server: Server) -> None:
    """0.28.1 and 1.x < 1.57.2 send `POST //openai/...` for endpoints ending in `/`."""
    body = json.dumps({"messages": MESSAGES, "max_tokens": 2}).encode()
    request = (
        f"POST //openai/deployments/gpt-4/chat/completions?api-version=2023-05-15 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\napi-key: {server.key1}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert b'"object":"chat.completion"' in reply


def test_usage_matches_the_models_tokenizer(server: Server) -> None:
    import llama_cpp

    from cerulean.engines.base import ChatMessage
    from cerulean.engines.llamacpp.prompts import BASE_FORMATS, EMBEDDED_FORMAT

    completion = client(server).chat.completions.create(
        model="gpt-4",
        messages=MESSAGES,
        max_tokens=3,
        temperature=0,  # type: ignore[arg-type]
    )
    model_path = next((server.home / "models").glob("gemma*.gguf"))  # not the embedding model
    vocab = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    prompt = BASE_FORMATS[EMBEDDED_FORMAT]().render(
        tuple(ChatMessage(m["role"], m["content"]) for m in MESSAGES)
    )
    expected = len(vocab.tokenize(prompt.text.encode(), add_bos=True, special=True))
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected
    if completion.choices[0].finish_reason == "length":
        assert completion.usage.completion_tokens == 3


def test_disconnect_mid_stream_does_not_wedge(server: Server) -> None:
    url = f"{server.endpoint}openai/deployments/gpt-4/chat/completions?api-version=2024-10-21"
    body = {
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 2000,
        "stream": True,
        "stop": ["@@@@"],
    }
    with (
        recording_client(timeout=60) as http,
        http.stream("POST", url, json=body, headers={"api-key": server.key1}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # The abandoned generation is cancelled at its next token; the next request runs at once.
    started = time.monotonic()
    completion = client(server).chat.completions.create(
        model="gpt-4", messages=MESSAGES, max_tokens=4
    )  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert time.monotonic() - started < 20
    assert httpx.get(f"{server.endpoint}healthz").status_code == 200


def test_health_answers_while_generating(server: Server) -> None:
    async def main() -> float:
        aclient = AsyncAzureOpenAI(
            azure_endpoint=server.endpoint,
            api_key=server.key1,
            api_version="2024-10-21",
            http_client=recording_async_client(),
        )
        task = asyncio.create_task(
            aclient.chat.completions.create(
                model="gpt-4", messages=MESSAGES, max_tokens=64, temperature=1
            )  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as http:
            started = time.monotonic()
            assert (await http.get(f"{server.endpoint}healthz")).status_code == 200
            elapsed = time.monotonic() - started
        await task
        await aclient.close()
        return elapsed

    assert asyncio.run(main()) < 1.0


def test_models_dir_holds_the_verified_embedded_file(server: Server) -> None:
    files = sorted(p.name for p in Path(server.home / "models").iterdir())
    assert "gemma-3-270m-q4_k_m.gguf" in files and "gemma-3-270m-q4_k_m.gguf.verified" in files


def test_n_choices_sync_and_streaming(server: Server) -> None:
    sdk = client(server)
    body = sdk.chat.completions.create(
        model="gpt-4", messages=MESSAGES, n=3, max_tokens=8, temperature=1.0, seed=4
    )
    assert [c.index for c in body.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in body.choices)
    assert body.usage is not None and body.usage.prompt_tokens > 0
    # Usage counts the prompt once and every choice's tokens (each at most max_tokens).
    assert 1 <= body.usage.completion_tokens <= 3 * 8
    stream = sdk.chat.completions.create(
        model="gpt-4", messages=MESSAGES, n=2, max_tokens=8, stream=True
    )
    finished = {c.index for chunk in stream for c in chunk.choices if c.finish_reason}
    assert finished == {0, 1}


def test_response_format_json_schema_through_the_sdk(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    body = client(server).chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Is the sea salty? Answer in JSON."}],
        max_tokens=32,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": True},
        },
    )
    assert json.loads(body.choices[0].message.content or "") in (
        {"answer": "yes"},
        {"answer": "no"},
    )
