"""Chat completions: wire request → engine request, engine output → Azure's JSON and SSE."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cerulean.apiversions import ApiVersion
from cerulean.engines.base import (
    ChatMessage,
    EngineChunk,
    Generation,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    TokenLogprob,
)
from cerulean.errors import APIError, EngineError, InternalServerError, InvalidRequest
from cerulean.ids import completion_id
from cerulean.protocol.chat import ChatCompletionRequestMessage, CreateChatCompletionRequest
from cerulean.services.logprobs import chat_logprobs, chat_logprobs_param
from cerulean.streaming import DONE, encode_event, error_event

__all__ = [
    "ChatContext",
    "collect_completion",
    "stream_completion",
    "to_generation_request",
]

logger = logging.getLogger(__name__)

_SAFE = {"filtered": False, "severity": "safe"}
_CHOICE_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTER = {**_CHOICE_FILTER, "jailbreak": {"filtered": False, "detected": False}}

# Parameters this release refuses loudly rather than ignore: (field, predicate that it is "used").
_NOT_YET: tuple[tuple[str, Any], ...] = (
    ("tools", lambda v: bool(v)),
    ("functions", lambda v: bool(v)),
    ("tool_choice", lambda v: v not in (None, "none")),
    ("function_call", lambda v: v not in (None, "none")),
)


@dataclass(frozen=True)
class ChatContext:
    """What every chunk or body of one completion shares."""

    model: str
    api_version: ApiVersion
    logprobs: bool = False  # whether choices carry log probabilities
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def annotate(self) -> bool:
        return self.api_version.has_content_filter_annotations


def _flatten(message: ChatCompletionRequestMessage, index: int) -> ChatMessage:
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for part in content:
            if part.type != "text":
                raise InvalidRequest(
                    f"This model accepts text only; content parts of type '{part.type}' are not "
                    "supported by this deployment.",
                    param=f"messages.{index}.content",
                )
            pieces.append(part.text or "")
        text = "\n".join(pieces)
    return ChatMessage(role=message.role, content=text, name=message.name)


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise InvalidRequest(f"{stops!r} is too long - 'stop'", param="stop")
    return tuple(s for s in stops if s)


def _logit_bias(biases: dict[str, int] | None) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` with ids as decimal strings and biases in [-100, 100]."""
    out: list[tuple[int, float]] = []
    for key, bias in (biases or {}).items():
        if not (key.isascii() and key.isdigit()):
            raise InvalidRequest(
                f"Invalid key in 'logit_bias': {key}. Keys must be token ids.", param="logit_bias"
            )
        if not -100 <= bias <= 100:
            raise InvalidRequest(
                f"Invalid value for 'logit_bias' key {key}: {bias}. Values must be between -100 "
                "and 100.",
                param="logit_bias",
            )
        out.append((int(key), float(bias)))
    return tuple(out)


def _response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    """``text`` (or nothing), ``json_object``, or ``json_schema`` with its ``schema``."""
    value = value or {}
    kind = value.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest(
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
            )
        if schema is not None and not isinstance(schema, dict):
            raise InvalidRequest(
                f"{schema!r} is not of type 'object' - 'response_format.json_schema.schema'",
                param="response_format.json_schema.schema",
            )
        return ResponseFormat("json_schema", schema or {})
    raise InvalidRequest(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
        param="response_format.type",
    )


def _refuse_unsupported(body: CreateChatCompletionRequest) -> None:
    for name, used in _NOT_YET:
        if used(getattr(body, name)):
            raise InvalidRequest(
                f"The '{name}' parameter is not supported by Cerulean yet.",
                param=name,
                code="unsupported_parameter",
            )


def to_generation_request(body: CreateChatCompletionRequest) -> GenerationRequest:
    """Translate a validated wire request into the engine's terms (raises 400s)."""
    _refuse_unsupported(body)
    messages = tuple(_flatten(m, i) for i, m in enumerate(body.messages))
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    params = SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=max_tokens,
        stop=_stops(body.stop),
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias(body.logit_bias),
        response_format=_response_format(body.response_format),
        logprobs=chat_logprobs_param(body.logprobs, body.top_logprobs),
    )
    return GenerationRequest(messages=messages, params=params, n=body.n or 1)


def _usage(finals: dict[int, EngineChunk]) -> dict[str, int]:
    """Usage of all choices: the prompt once, every choice's completion tokens."""
    prompt = next(iter(finals.values())).prompt_tokens if finals else 0
    completion = sum(chunk.completion_tokens for chunk in finals.values())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    ctx: ChatContext,
    texts: dict[int, str],
    finals: dict[int, EngineChunk],
    logprobs: dict[int, list[TokenLogprob]] | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` body with one choice per answer."""
    choices: list[dict[str, Any]] = []
    for index in sorted(finals):
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": finals[index].finish_reason,
            "message": {"role": "assistant", "content": texts.get(index, "")},
        }
        if ctx.logprobs:
            choice["logprobs"] = chat_logprobs((logprobs or {}).get(index, []))
        if ctx.annotate:
            choice["content_filter_results"] = _CHOICE_FILTER
        choices.append(choice)
    body: dict[str, Any] = {
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
        "usage": _usage(finals),
    }
    if ctx.annotate:
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _PROMPT_FILTER}
        ]
    return body


async def collect_completion(ctx: ChatContext, generation: Generation) -> dict[str, Any]:
    """Run ``generation`` to the end and build the JSON body."""
    texts: dict[int, str] = {}
    finals: dict[int, EngineChunk] = {}
    scored: dict[int, list[TokenLogprob]] = {}
    try:
        async for chunk in generation:
            texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
            scored.setdefault(chunk.index, []).extend(chunk.logprobs)
            if chunk.finish_reason is not None:
                finals[chunk.index] = chunk
    finally:
        await generation.aclose()
    if not finals or len(finals) != len(texts):
        raise EngineError("the engine ended without a finish reason")
    return completion_body(ctx, texts, finals, scored)


def _chunk(
    ctx: ChatContext, delta: dict[str, Any], finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if ctx.annotate:
        choice["content_filter_results"] = _CHOICE_FILTER if delta.get("content") else {}
    return {
        "id": ctx.id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
    }


def _prompt_filter_chunk() -> dict[str, Any]:
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _PROMPT_FILTER}],
    }


async def stream_completion(
    ctx: ChatContext,
    generation: Generation,
    *,
    include_usage: bool,
    request_id: str,
    n: int = 1,
) -> AsyncIterator[bytes]:
    """SSE events for ``generation``: prompt-filter chunk, role, content, finish, ``[DONE]``.

    Errors after the first byte become a final ``data: {"error": ...}`` event (§4.4); closing this
    iterator (a client disconnect) cancels the generation and frees its engine slot.
    """
    try:
        if ctx.annotate:
            yield encode_event(_prompt_filter_chunk())
        for index in range(n):
            role = {"role": "assistant", "content": ""}
            yield encode_event(_with_usage(_chunk(ctx, role, index=index), include_usage))
        finals: dict[int, EngineChunk] = {}
        async for chunk in generation:
            i = chunk.index
            if chunk.text:
                content = _chunk(ctx, {"content": chunk.text}, index=i)
                _with_logprobs(ctx, content, chunk.logprobs)
                yield encode_event(_with_usage(content, include_usage))
            if chunk.finish_reason is not None:
                finals[i] = chunk
                ended = _chunk(ctx, {}, chunk.finish_reason, index=i)
                if not chunk.text:  # tokens that showed no text of their own
                    _with_logprobs(ctx, ended, chunk.logprobs)
                yield encode_event(_with_usage(ended, include_usage))
        if include_usage:
            yield encode_event({**_chunk(ctx, {}), "choices": [], "usage": _usage(finals)})
        yield DONE
    except APIError as exc:
        yield error_event(exc.body())
        yield DONE
    except EngineError:
        logger.exception("stream failed")
        yield error_event(InternalServerError(request_id).body())
        yield DONE
    finally:
        await generation.aclose()


def _with_logprobs(ctx: ChatContext, chunk: dict[str, Any], entries: Any) -> None:
    if ctx.logprobs:
        chunk["choices"][0]["logprobs"] = chat_logprobs(entries)


def _with_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    if include_usage:
        chunk["usage"] = None
    return chunk
