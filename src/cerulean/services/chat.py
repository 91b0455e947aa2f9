"""Chat completions: the one entry point, :func:`create_chat_completion`.

It translates the wire request into the engine's terms (the conversation as Azure defines it,
the tools, ``response_format``, the sampling), admits the request to the deployment's rate
limits once the engine has counted the prompt, starts the generation and shapes what the engine
gives back — text and tool-call deltas — into Azure's JSON body or event stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cerulean.engines.base import (
    ChatMessage,
    ContentPart,
    Engine,
    EngineChunk,
    Generation,
    GenerationRequest,
    ResponseFormat,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    track_phases,
)
from cerulean.errors import EngineError, InvalidRequest
from cerulean.protocol.chat import ChatCompletionRequestMessage, CreateChatCompletionRequest
from cerulean.protocol.sse import encode_event
from cerulean.services.admission import reservation
from cerulean.services.answers import (
    NOT_FILTERED,
    Answer,
    AnswerContext,
    InferenceCall,
    Meter,
    annotation_chunk,
    final_usage,
    guarded,
    observe_request,
    prompt_filter_chunk,
    prompt_filter_results,
    sampling,
    usage,
    with_usage,
)
from cerulean.services.logprobs import chat_logprobs, chat_logprobs_param
from cerulean.services.tools import read_tools

__all__ = [
    "ChatContext",
    "Started",
    "close_generation",
    "create_chat_completion",
    "read_response_format",
    "require_json_word",
    "start_generation",
    "start_screened",
    "to_generation_request",
]

# Roles whose messages must have content (assistant may carry calls instead; function may be null).
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


@dataclass(frozen=True)
class ChatContext(AnswerContext):
    """What every chunk or body of one chat completion shares."""

    logprobs: bool = False  # whether choices carry log probabilities
    legacy: bool = False  # the functions API: calls answer in ``function_call``
    # Whether answers may be calls: then a choice's role chunk waits for its first output.
    calls: bool = False


async def create_chat_completion(
    call: InferenceCall[Engine], body: CreateChatCompletionRequest
) -> Answer:
    """Admit, start and shape one chat completion (raises Azure's errors before any output)."""
    wanted = to_generation_request(body)
    started, screened = await start_screened(call, wanted)
    generation, headers, meter = started.generation, started.headers, started.meter
    if call.content_filter is not None and call.content_filter.active:
        generation = call.content_filter.wrap(generation, stream=bool(body.stream))
        generation.prompt_filter_results = screened
    info = call.engine.info
    tools = wanted.tools
    ctx = ChatContext(
        model=info.name,
        api_version=call.version,
        fingerprint=info.fingerprint,
        logprobs=bool(body.logprobs),
        legacy=tools is not None and tools.legacy,
        calls=tools is not None and tools.choice != "none",
    )
    headers["x-ms-deployment-name"] = call.deployment.name
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return Answer(
        headers=headers,
        stream=bool(body.stream),
        collect=lambda: _collect(ctx, generation, meter, call),
        events=lambda: guarded(
            _events(ctx, generation, meter, include_usage=include_usage, n=wanted.n),
            request_id=call.request_id,
            close=lambda: _closed(generation, meter, call),
        ),
        aclose=generation.aclose,
    )


async def screen_prompt(
    call: InferenceCall[Engine], messages: Sequence[ChatMessage]
) -> list[Any] | None:
    """The prompt's filter results (Azure's 400 when the policy filters it); None when the
    deployment's policy evaluates nothing. The harm categories and blocklists read the whole
    conversation; the prompt shield reads what users wrote (user prompt attacks). The Responses
    API can share this (its hook: docs/content-filtering.md)."""
    content_filter = call.content_filter
    if content_filter is None or not content_filter.active:
        return None
    text = "\n".join(m.text for m in messages)
    said = "\n".join(m.text for m in messages if m.role == "user")
    return await content_filter.check_prompts([text], [said], [[m.text for m in messages]])


async def start_screened(
    call: InferenceCall[Engine], wanted: GenerationRequest
) -> tuple[Started, list[Any] | None]:
    """Start the generation while the content filter screens the prompt, and the prompt's
    filter results: the evaluation runs beside the engine's admission and prompt computation
    instead of before them, so it adds nothing to the answer's latency. A filtered prompt then
    closes the started generation (freeing its slot) and raises Azure's 400; it was admitted,
    so it counts against the rate limits like any request, and an error of the start (a 429,
    a prompt too long) is given before the filter's verdict: Azure's gateway counts and limits
    requests before its filter sees them (inferred; docs/content-filtering.md)."""
    content_filter = call.content_filter
    if content_filter is None or not content_filter.active:
        return await start_generation(call, wanted), None
    screening = asyncio.ensure_future(screen_prompt(call, wanted.messages))
    try:
        started = await start_generation(call, wanted)
    except BaseException:
        screening.cancel()
        await asyncio.gather(screening, return_exceptions=True)
        raise
    try:
        screened = await screening
    except BaseException:
        await close_generation(started, call)
        raise
    return started, screened


@dataclass(frozen=True)
class Started:
    """A generation admitted to the deployment's rate limits: the ``x-ratelimit-*`` headers
    its admission gave, and the meter that settles its real usage (:func:`close_generation`)."""

    generation: Generation
    headers: dict[str, str]
    meter: Meter


async def start_generation(call: InferenceCall[Engine], wanted: GenerationRequest) -> Started:
    """Admit ``wanted`` to the deployment's rate limits once the engine has counted its prompt,
    and start it (raises Azure's errors before any output). Chat and the Responses API share
    this: both charge the same limits and send the same headers."""
    wanted = replace(wanted, priority=call.priority)  # "batch" for a batch job's line
    engine = call.engine
    _check_parts(wanted.messages, engine.info.content_parts)
    headers: dict[str, str] = {}
    meter = Meter()

    async def admit(prompt_tokens: int) -> None:
        budget = engine.info.completion_budget(prompt_tokens, wanted.params.max_tokens)
        call.quota.check_answers(call.deployment, choices=wanted.n, tokens=budget * wanted.n)
        tokens = reservation(engine.info, prompt_tokens, wanted.params.max_tokens, choices=wanted.n)
        charged = await call.quota.admit(
            call.deployment, tokens=tokens, capability="chat_completion"
        )
        meter.charged = tokens
        headers.update(charged)

    meter.record.phases = track_phases()
    generation = await engine.generate(wanted, admit=admit)
    observe_request(call, engine.info.name, wanted.params, wanted.n)
    if meter.record.capture:
        meter.record.input_messages = [
            {"role": str(m.role), "content": m.text} for m in wanted.messages
        ]
    return Started(generation, headers, meter)


async def close_generation(started: Started, call: InferenceCall[Engine]) -> None:
    """Free the engine and settle the usage (finished, failed or abandoned)."""
    await _closed(started.generation, started.meter, call)


# -- the request ----------------------------------------------------------------------------------


def to_generation_request(body: CreateChatCompletionRequest) -> GenerationRequest:
    """Translate a validated wire request into the engine's terms (raises Azure's 400s)."""
    messages = tuple(_message(m, i) for i, m in enumerate(body.messages))
    response_format = read_response_format(body.response_format)
    if response_format is not None and response_format.kind == "json_object":
        require_json_word(messages)
    tools = read_tools(
        body.tools, body.tool_choice, body.functions, body.function_call, body.parallel_tool_calls
    )
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    params = sampling(
        body, max_tokens=max_tokens, logprobs=chat_logprobs_param(body.logprobs, body.top_logprobs)
    )
    return GenerationRequest(
        messages=messages,
        params=params,
        n=body.n or 1,
        tools=tools,
        response_format=response_format,
    )


def _message(message: ChatCompletionRequestMessage, index: int) -> ChatMessage:
    where = f"messages.{index}"
    content = message.content
    if content is None and message.role in _CONTENT_REQUIRED:
        raise InvalidRequest(f"'content' is a required property - '{where}'", param=where)
    if message.role == "tool" and message.tool_call_id is None:
        raise InvalidRequest(f"'tool_call_id' is a required property - '{where}'", param=where)
    if message.role == "function" and message.name is None:
        raise InvalidRequest(f"'name' is a required property - '{where}'", param=where)
    parts: str | tuple[ContentPart, ...] | None
    if content is None or isinstance(content, str):
        parts = content
    else:
        parts = tuple(
            ContentPart(
                part.type,
                part.text if part.type == "text" else part.refusal,
                part.model_dump(exclude_none=True),
            )
            for part in content
        )
    calls = tuple(
        ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
    )
    legacy = message.function_call
    return ChatMessage(
        role=message.role,
        content=parts,
        name=message.name,
        tool_calls=calls,
        function_call=None if legacy is None else ToolCall("", legacy.name, legacy.arguments),
        tool_call_id=message.tool_call_id,
    )


def _check_parts(messages: Sequence[ChatMessage], readable: frozenset[str]) -> None:
    """A content part the deployment's model cannot read (an image for a text model) is a 400."""
    for index, message in enumerate(messages):
        if isinstance(message.content, str) or message.content is None:
            continue
        for part in message.content:
            if part.type not in ("text", "refusal") and part.type not in readable:
                raise InvalidRequest(
                    "This model accepts text only; content parts of type "
                    f"'{part.type}' are not supported by this deployment.",
                    param=f"messages.{index}.content",
                )


def read_response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
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
        strict = spec.get("strict")
        return ResponseFormat(
            "json_schema",
            schema or {},
            name=spec["name"],
            strict=strict if isinstance(strict, bool) else None,
        )
    raise InvalidRequest(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
        param="response_format.type",
    )


def require_json_word(messages: tuple[ChatMessage, ...]) -> None:
    """OpenAI's JSON-mode rule: the prompt must ask for JSON, or models may emit whitespace."""
    if not any("json" in message.text.lower() for message in messages):
        raise InvalidRequest(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of "
            "type 'json_object'.",
            param="messages",
        )


# -- the JSON body --------------------------------------------------------------------------------


@dataclass
class _Call:
    id: str
    name: str
    arguments: str = ""


@dataclass
class _Choice:
    """One answer as it accumulates."""

    text: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: EngineChunk | None = None
    filters: Mapping[str, Any] | None = None  # what the engine's server evaluated, if it did

    def add(self, chunk: EngineChunk) -> None:
        self.text += chunk.text
        self.logprobs.extend(chunk.logprobs)
        if chunk.filter_results is not None and (chunk.filter_results or self.filters is None):
            self.filters = chunk.filter_results
        for delta in chunk.tool_calls:
            if delta.name is not None:
                self.calls[delta.index] = _Call(delta.id or "", delta.name)
            if delta.index in self.calls:
                self.calls[delta.index].arguments += delta.arguments
        if chunk.finish_reason is not None:
            self.final = chunk


def _finish(ctx: ChatContext, reason: str) -> str:
    return "function_call" if ctx.legacy and reason == "tool_calls" else reason


def _message_body(ctx: ChatContext, choice: _Choice) -> dict[str, Any]:
    """The ``message`` of one choice: its text, or its calls (content null); a choice the
    content filter withheld has null content (Azure's documents show no ``content`` at all;
    the spec and openai-python want it, null: docs/content-filtering.md)."""
    if choice.final is not None and choice.final.finish_reason == "content_filter":
        return {"role": "assistant", "content": None}
    if not choice.calls:
        return {"role": "assistant", "content": choice.text}
    if ctx.legacy:
        first = choice.calls[min(choice.calls)]
        call = {"name": first.name, "arguments": first.arguments}
        return {"role": "assistant", "content": None, "function_call": call}
    tool_calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for _, c in sorted(choice.calls.items())
    ]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


async def _closed(generation: Generation, meter: Meter, call: InferenceCall[Engine]) -> None:
    """The end of a stream (finished, failed or abandoned): free the engine, settle the usage."""
    await generation.aclose()
    await meter.settle(call)


def completion_body(
    ctx: ChatContext, choices: dict[int, _Choice], prompt_filters: list[Any] | None = None
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` body with one choice per answer."""
    out: list[dict[str, Any]] = []
    for index in sorted(choices):
        choice = choices[index]
        assert choice.final is not None
        message = _message_body(ctx, choice)
        entry: dict[str, Any] = {
            "index": index,
            "finish_reason": _finish(ctx, choice.final.finish_reason or "stop"),
            "message": {**message, "refusal": None},
            # Required (nullable) by the spec's createChatCompletionResponse.
            "logprobs": chat_logprobs(choice.logprobs) if ctx.logprobs else None,
        }
        if ctx.annotate:
            evaluated = choice.filters
            default = NOT_FILTERED if message.get("content") else {}
            entry["content_filter_results"] = dict(evaluated) if evaluated is not None else default
        out.append(entry)
    finals = [c.final for c in choices.values() if c.final is not None]
    body: dict[str, Any] = ctx.stamp(
        {
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": out,
            "usage": usage(*final_usage(finals)),
        }
    )
    if ctx.annotate:
        body["prompt_filter_results"] = prompt_filters or prompt_filter_results(1)
    return body


async def _collect(
    ctx: ChatContext, generation: Generation, meter: Meter, call: InferenceCall[Engine]
) -> dict[str, Any]:
    """Run ``generation`` to the end and build the JSON body."""
    choices: dict[int, _Choice] = {}
    try:
        async for chunk in generation:
            meter.add(chunk)
            choices.setdefault(chunk.index, _Choice()).add(chunk)
    finally:
        await _closed(generation, meter, call)
    if not choices or any(choice.final is None for choice in choices.values()):
        raise EngineError("the engine ended without a finish reason")
    return completion_body(ctx, choices, generation.prompt_filter_results)


# -- the event stream -----------------------------------------------------------------------------


def _chunk(
    ctx: ChatContext,
    delta: dict[str, Any],
    finish: str | None = None,
    index: int = 0,
    filters: Any = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if ctx.annotate:
        default = NOT_FILTERED if delta.get("content") else {}
        choice["content_filter_results"] = dict(filters) if filters is not None else default
    return ctx.stamp(
        {
            "id": ctx.id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [choice],
        }
    )


def _with_logprobs(
    ctx: ChatContext, chunk: dict[str, Any], entries: Sequence[TokenLogprob]
) -> dict[str, Any]:
    """``chunk`` with the log probabilities of the tokens it shows (when they were asked for)."""
    if ctx.logprobs:
        chunk["choices"][0]["logprobs"] = chat_logprobs(entries)
    return chunk


def _call_delta(ctx: ChatContext, delta: ToolCallDelta, first: bool) -> dict[str, Any]:
    """One tool-call piece as Azure streams it: id, type and name first, then arguments."""
    head: dict[str, Any] = {"role": "assistant", "content": None} if first else {}
    if ctx.legacy:
        if delta.name is not None:
            return {**head, "function_call": {"name": delta.name, "arguments": ""}}
        return {"function_call": {"arguments": delta.arguments}}
    if delta.name is not None:
        call = {
            "index": delta.index,
            "id": delta.id,
            "type": "function",
            "function": {"name": delta.name, "arguments": ""},
        }
        return {**head, "tool_calls": [call]}
    return {"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]}


class _TextEvents:
    """Encoded chunks of plain text, the stream's most common event, without building and
    encoding a whole chunk for each: a choice's chunk is encoded once with a marker where the
    text goes, and each text's JSON string fills it — byte for byte what encoding the chunk
    gives (the same encoder escapes a string alone or inside the chunk)."""

    _MARK = "\x00text\x00"

    def __init__(self, ctx: ChatContext, include_usage: bool) -> None:
        self._ctx = ctx
        self._include_usage = include_usage
        self._parts: dict[int, tuple[bytes, bytes]] = {}

    def fits(self, chunk: EngineChunk) -> bool:
        """Whether ``chunk`` is text and nothing else (no calls, finish, logprobs, filters)."""
        return bool(
            chunk.text
            and not chunk.tool_calls
            and chunk.finish_reason is None
            and chunk.filter_results is None
            and chunk.filter_offsets is None
            and not self._ctx.logprobs
        )

    def encoded(self, text: str, index: int) -> bytes:
        parts = self._parts.get(index)
        if parts is None:
            chunk = with_usage(
                _chunk(self._ctx, {"content": self._MARK}, index=index), self._include_usage
            )
            head, _, tail = encode_event(chunk).partition(json.dumps(self._MARK).encode())
            parts = self._parts[index] = (head, tail)
        return parts[0] + json.dumps(text).encode() + parts[1]


async def _events(
    ctx: ChatContext, generation: Generation, meter: Meter, *, include_usage: bool, n: int
) -> AsyncIterator[dict[str, Any] | bytes]:
    """The stream's events: prompt-filter chunk, role, content or calls, finish, usage.

    Without tools every choice's role chunk comes first; with tools a choice's role chunk waits
    for its first output, which tells whether the answer is text or calls.
    """
    opening: list[dict[str, Any]] = []
    if ctx.annotate:
        chunk0 = prompt_filter_chunk()
        if generation.prompt_filter_results is not None:  # evaluated by the engine's server
            chunk0["prompt_filter_results"] = generation.prompt_filter_results
        opening.append(chunk0)
    started: set[int] = set()
    if not ctx.calls:
        for index in range(n):
            started.add(index)
            opening.append(with_usage(_role_chunk(ctx, index), include_usage))
    # With the first chunk in hand the opening goes out with it, one write and one wake-up of
    # the client instead of three (the same bytes); else at once, before the engine's first.
    pending = b"".join(map(encode_event, opening)) if generation.first_chunk_in_hand else b""
    if not pending:
        for event in opening:
            yield event
    finals: list[EngineChunk] = []
    texts = _TextEvents(ctx, include_usage)
    try:
        async for chunk in generation:
            meter.add(chunk)
            i = chunk.index
            if i in started and texts.fits(chunk):
                encoded = texts.encoded(chunk.text, i)
            else:
                events = _chunk_events(ctx, chunk, first=i not in started)
                if events:
                    started.add(i)
                encoded = b"".join(encode_event(with_usage(e, include_usage)) for e in events)
            if chunk.finish_reason is not None:
                finals.append(chunk)
            if pending:
                encoded, pending = pending + encoded, b""
            if encoded:
                yield encoded
    except Exception:
        if pending:  # the opening still comes first, before the error event
            yield pending
        raise
    if pending:
        yield pending
    if include_usage:
        yield {**_chunk(ctx, {}), "choices": [], "usage": usage(*final_usage(finals))}


def _role_chunk(ctx: ChatContext, index: int) -> dict[str, Any]:
    return _chunk(ctx, {"role": "assistant", "content": ""}, index=index)


def _chunk_events(ctx: ChatContext, chunk: EngineChunk, *, first: bool) -> list[dict[str, Any]]:
    """The events one engine chunk makes (none for a chunk with nothing in it)."""
    i = chunk.index
    events: list[dict[str, Any]] = []
    if chunk.filter_offsets is not None:  # the asynchronous filter's annotation
        return [annotation_chunk(chunk, i)] if ctx.annotate else []
    if chunk.text:
        if first:
            events.append(_role_chunk(ctx, i))
            first = False
        events.append(
            _with_logprobs(
                ctx,
                _chunk(ctx, {"content": chunk.text}, index=i, filters=chunk.filter_results),
                chunk.logprobs,
            )
        )
    for delta in chunk.tool_calls:
        events.append(_chunk(ctx, _call_delta(ctx, delta, first), index=i))
        first = False
    if chunk.finish_reason is not None:
        if first:
            events.append(_role_chunk(ctx, i))
        reason = _finish(ctx, chunk.finish_reason)
        ended = _chunk(ctx, {}, reason, index=i, filters=chunk.filter_results)
        if not chunk.text:  # tokens that showed no text of their own
            _with_logprobs(ctx, ended, chunk.logprobs)
        events.append(ended)
    return events
