"""Chat completions: wire request → engine request, engine output → Azure's JSON and SSE."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

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
from cerulean.protocol.chat import ChatCompletionRequestMessage, CreateChatCompletionRequest
from cerulean.services.context import (
    CHOICE_FILTER,
    PROMPT_FILTER,
    AnswerContext,
    logit_bias_pairs,
    stop_strings,
)
from cerulean.services.logprobs import chat_logprobs, chat_logprobs_param
from cerulean.services.tools import (
    ToolPlan,
    call_id,
    call_schema,
    instructions,
    looks_like_call,
    parse_answer,
    plan_tools,
    render_calls,
)
from cerulean.streaming import DONE, encode_event, error_event

__all__ = [
    "ChatContext",
    "collect_completion",
    "plan_request",
    "stream_completion",
    "to_generation_request",
]

logger = logging.getLogger(__name__)


# Roles whose messages must have content (assistant may carry calls instead; function may be null).
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


@dataclass(frozen=True)
class ChatContext(AnswerContext):
    """What every chunk or body of one chat completion shares."""

    tools: ToolPlan | None = None
    logprobs: bool = False  # whether choices carry log probabilities


def _flatten(message: ChatCompletionRequestMessage, index: int) -> ChatMessage:
    where = f"messages.{index}"
    content = message.content
    if content is None and message.role in _CONTENT_REQUIRED:
        raise InvalidRequest(f"'content' is a required property - '{where}'", param=where)
    if message.role == "tool" and message.tool_call_id is None:
        raise InvalidRequest(f"'tool_call_id' is a required property - '{where}'", param=where)
    if message.role == "function" and message.name is None:
        raise InvalidRequest(f"'name' is a required property - '{where}'", param=where)
    if content is None:
        text = _calls_text(message)
    elif isinstance(content, str):
        text = content
    else:
        text = "\n".join(_part_text(part.type, part.text, part.refusal, index) for part in content)
    return ChatMessage(role=message.role, content=text, name=message.name)


def _part_text(kind: str, text: str | None, refusal: str | None, index: int) -> str:
    if kind == "text":
        return text or ""
    if kind == "refusal":
        return refusal or ""
    raise InvalidRequest(
        f"This model accepts text only; content parts of type '{kind}' are not supported by "
        "this deployment.",
        param=f"messages.{index}.content",
    )


def _calls_text(message: ChatCompletionRequestMessage) -> str:
    """An assistant message without content: the calls it made, as the model writes them."""
    calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or ()]
    if message.function_call is not None:
        calls.append((message.function_call.name, message.function_call.arguments))
    return render_calls(calls) if calls else ""


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


def _require_json_word(messages: tuple[ChatMessage, ...]) -> None:
    """OpenAI's JSON-mode rule: the prompt must ask for JSON, or models may emit whitespace."""
    if not any("json" in message.content.lower() for message in messages):
        raise InvalidRequest(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of "
            "type 'json_object'.",
            param="messages",
        )


def _with_instructions(
    messages: tuple[ChatMessage, ...], plan: ToolPlan
) -> tuple[ChatMessage, ...]:
    """The function descriptions joined to the first system message (or one put in front)."""
    text = instructions(plan)
    if messages and messages[0].role in ("system", "developer"):
        head = messages[0]
        merged = ChatMessage(head.role, f"{head.content.rstrip()}\n\n{text}", head.name)
        return (merged, *messages[1:])
    return (ChatMessage("system", text), *messages)


def plan_request(body: CreateChatCompletionRequest) -> ToolPlan | None:
    """The request's function-calling plan (raises the 400s of bad tools)."""
    return plan_tools(
        body.tools, body.tool_choice, body.functions, body.function_call, body.parallel_tool_calls
    )


def to_generation_request(
    body: CreateChatCompletionRequest, plan: ToolPlan | None = None
) -> GenerationRequest:
    """Translate a validated wire request into the engine's terms (raises 400s)."""
    messages = tuple(_flatten(m, i) for i, m in enumerate(body.messages))
    response_format = _response_format(body.response_format)
    if response_format is not None and response_format.kind == "json_object":
        _require_json_word(messages)
    if plan is not None:
        if response_format is not None:
            raise InvalidRequest(
                "Cerulean cannot combine 'response_format' with function calling in one request; "
                "send one or the other.",
                param="response_format",
                code="unsupported_parameter",
            )
        messages = _with_instructions(messages, plan)
        response_format = ResponseFormat(
            "json_schema", call_schema(plan), allow_text=plan.allow_text
        )
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    params = SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=max_tokens,
        stop=stop_strings(body.stop),
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=logit_bias_pairs(body.logit_bias),
        response_format=response_format,
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


def _answer(ctx: ChatContext, text: str, finish: str) -> tuple[dict[str, Any], str]:
    """The ``message`` of one choice and its finish reason (a call when the answer is one)."""
    calls = parse_answer(text) if ctx.tools is not None and finish == "stop" else None
    if calls is None or ctx.tools is None:
        return {"role": "assistant", "content": text}, finish
    if ctx.tools.legacy:
        call = calls[0]
        function = {"name": call.name, "arguments": call.arguments}
        return {"role": "assistant", "content": None, "function_call": function}, "function_call"
    tool_calls = [
        {
            "id": call_id(),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}, "tool_calls"


def completion_body(
    ctx: ChatContext,
    texts: dict[int, str],
    finals: dict[int, EngineChunk],
    logprobs: dict[int, list[TokenLogprob]] | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` body with one choice per answer."""
    choices: list[dict[str, Any]] = []
    for index in sorted(finals):
        final = finals[index]
        message, finish = _answer(ctx, texts.get(index, ""), final.finish_reason or "stop")
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": finish,
            "message": {**message, "refusal": None},
            # Required (nullable) by the spec's createChatCompletionResponse.
            "logprobs": chat_logprobs((logprobs or {}).get(index, [])) if ctx.logprobs else None,
        }
        if ctx.annotate:
            choice["content_filter_results"] = CHOICE_FILTER if message["content"] else {}
        choices.append(choice)
    body: dict[str, Any] = ctx.stamp(
        {
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": choices,
            "usage": _usage(finals),
        }
    )
    if ctx.annotate:
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": PROMPT_FILTER}
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
        choice["content_filter_results"] = CHOICE_FILTER if delta.get("content") else {}
    return ctx.stamp(
        {
            "id": ctx.id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [choice],
        }
    )


def _prompt_filter_chunk() -> dict[str, Any]:
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER}],
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
        chunks = _tool_deltas(ctx, generation, n) if ctx.tools else _text_deltas(ctx, generation, n)
        finals: dict[int, EngineChunk] = {}
        async for chunk, final in chunks:
            if final is not None:
                finals[final.index] = final
            if chunk is not None:
                yield encode_event(_with_usage(chunk, include_usage))
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


def _with_logprobs(
    ctx: ChatContext, chunk: dict[str, Any], entries: Sequence[TokenLogprob]
) -> dict[str, Any]:
    """``chunk`` with the log probabilities of the tokens it shows (when they were asked for)."""
    if ctx.logprobs:
        chunk["choices"][0]["logprobs"] = chat_logprobs(entries)
    return chunk


_Delta = tuple[dict[str, Any] | None, EngineChunk | None]


async def _text_deltas(ctx: ChatContext, generation: Generation, n: int) -> AsyncIterator[_Delta]:
    """Role chunks first, then each piece of text as it comes."""
    for index in range(n):
        yield _chunk(ctx, {"role": "assistant", "content": ""}, index=index), None
    async for chunk in generation:
        i = chunk.index
        if chunk.text:
            content = _chunk(ctx, {"content": chunk.text}, index=i)
            yield _with_logprobs(ctx, content, chunk.logprobs), None
        if chunk.finish_reason is not None:
            ended = _chunk(ctx, {}, chunk.finish_reason, index=i)
            if not chunk.text:  # tokens that showed no text of their own
                _with_logprobs(ctx, ended, chunk.logprobs)
            yield ended, chunk


async def _tool_deltas(ctx: ChatContext, generation: Generation, n: int) -> AsyncIterator[_Delta]:
    """Text streams as it comes once an answer's first visible character shows it is text;
    a call is held until it is complete, then sent as Azure streams calls (§4.4)."""
    held: dict[int, str] = {i: "" for i in range(n)}
    is_call: dict[int, bool | None] = {i: None for i in range(n)}
    async for chunk in generation:
        i = chunk.index
        if is_call[i] is None:
            held[i] += chunk.text
            is_call[i] = looks_like_call(held[i])
            if is_call[i] is False or (is_call[i] is None and chunk.finish_reason is not None):
                yield _chunk(ctx, {"role": "assistant", "content": ""}, index=i), None
                if held[i]:
                    yield _chunk(ctx, {"content": held[i]}, index=i), None
        elif is_call[i]:
            held[i] += chunk.text
        elif chunk.text:
            yield _chunk(ctx, {"content": chunk.text}, index=i), None
        if chunk.finish_reason is None:
            continue
        finish: str = chunk.finish_reason
        if is_call[i]:
            message, finish = _answer(ctx, held[i], finish)
            for delta in _call_deltas(message):
                yield _chunk(ctx, delta, index=i), None
        yield _chunk(ctx, {}, finish, index=i), chunk


def _call_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished answer as stream deltas: name and id first, then the arguments."""
    if "function_call" in message:
        call = message["function_call"]
        return [
            {"role": "assistant", "content": None, "function_call": {**call, "arguments": ""}},
            {"function_call": {"arguments": call["arguments"]}},
        ]
    if "tool_calls" not in message:  # a cut-off call: sent as the text it is
        return [{"role": "assistant", "content": ""}, {"content": message["content"]}]
    deltas: list[dict[str, Any]] = []
    for k, call in enumerate(message["tool_calls"]):
        head = {
            "index": k,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        first: dict[str, Any] = {"role": "assistant", "content": None} if k == 0 else {}
        deltas.append({**first, "tool_calls": [head]})
        arguments = {"index": k, "function": {"arguments": call["function"]["arguments"]}}
        deltas.append({"tool_calls": [arguments]})
    return deltas


def _with_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    if include_usage:
        chunk["usage"] = None
    return chunk
