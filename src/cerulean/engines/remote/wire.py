"""The engine request as an upstream's request body, and the upstream's stream as engine chunks.

Pure functions: no I/O. :func:`features` lists what a request needs of its upstream (checked
against the flavor's profile before any body is built); :func:`chat_body` and
:func:`completion_body` build the body an OpenAI- or Azure-dialect server takes (always
streaming, always with ``stream_options.include_usage`` so that usage is exact);
:class:`StreamReader` turns each ``data:`` event into :class:`~cerulean.engines.base.
EngineChunk` objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cerulean.engines.base import (
    ChatMessage,
    EngineChunk,
    FinishReason,
    GenerationRequest,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from cerulean.engines.remote.flavors import Flavor

__all__ = ["StreamReader", "UpstreamStreamError", "chat_body", "completion_body", "features"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class UpstreamStreamError(Exception):
    """The upstream sent an error event, or something that is not a chunk, mid-stream."""


# -- what a request needs ---------------------------------------------------------------------


def features(request: GenerationRequest) -> dict[str, str]:
    """The features the request needs, each with the parameter that asks for it."""
    needed: dict[str, str] = {}
    params = request.params
    if request.prompt is not None:
        needed["completions"] = "prompt"
        if request.echo:
            needed["echo"] = "echo"
        if request.suffix is not None:
            needed["suffix"] = "suffix"
    if request.tools is not None and request.tools.choice != "none":
        needed["tools"] = "functions" if request.tools.legacy else "tools"
    if request.response_format is not None:
        needed[request.response_format.kind] = "response_format"
    if params.grammar is not None:
        needed["grammar"] = "grammar"
    if params.logprobs is not None:
        needed["logprobs"] = "logprobs"
    if request.n > 1:
        needed["n"] = "n"
    if params.seed is not None:
        needed["seed"] = "seed"
    if params.logit_bias:
        needed["logit_bias"] = "logit_bias"
    return needed


# -- the request body -------------------------------------------------------------------------


def _sampling(request: GenerationRequest, body: dict[str, Any], flavor: Flavor) -> None:
    params = request.params
    body["temperature"] = params.temperature
    body["top_p"] = params.top_p
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if request.n > 1:
        body["n"] = request.n
    if params.grammar is not None:
        flavor.put_grammar(body, params.grammar)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if content is None or isinstance(content, str):
        out["content"] = content
    else:
        out["content"] = [
            dict(part.raw) or {"type": part.type, "text": part.text} for part in content
        ]
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.function_call is not None:
        call = message.function_call
        out["function_call"] = {"name": call.name, "arguments": call.arguments}
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tools(request: GenerationRequest, body: dict[str, Any]) -> None:
    tools = request.tools
    if tools is None:
        return
    functions = [
        {
            "name": f.name,
            "description": f.description,
            "parameters": dict(f.parameters),
            **({} if f.strict is None else {"strict": f.strict}),
        }
        for f in tools.functions
    ]
    if tools.legacy:
        body["functions"] = functions
        named = tools.choice == "function"
        body["function_call"] = {"name": tools.function} if named else tools.choice
        return
    body["tools"] = [{"type": "function", "function": f} for f in functions]
    if tools.choice == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": tools.function}}
    else:
        body["tool_choice"] = tools.choice
    if tools.choice != "none":
        body["parallel_tool_calls"] = tools.parallel


def _response_format(request: GenerationRequest, body: dict[str, Any]) -> None:
    fmt = request.response_format
    if fmt is None:
        return
    if fmt.kind == "json_object":
        body["response_format"] = {"type": "json_object"}
        return
    spec: dict[str, Any] = {"name": fmt.name or "response", "schema": dict(fmt.schema or {})}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    body["response_format"] = {"type": "json_schema", "json_schema": spec}


def chat_body(request: GenerationRequest, flavor: Flavor, model: str | None) -> dict[str, Any]:
    """The chat completions body for ``request`` (``model`` for the OpenAI dialect)."""
    body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
    if flavor.dialect == "openai" and model is not None:
        body["model"] = model
    _sampling(request, body, flavor)
    if request.params.logprobs is not None:
        body["logprobs"] = True
        if request.params.logprobs:
            body["top_logprobs"] = request.params.logprobs
    _tools(request, body)
    _response_format(request, body)
    return body


def completion_body(
    request: GenerationRequest, flavor: Flavor, model: str | None
) -> dict[str, Any]:
    """The legacy completions body for ``request`` (a raw ``prompt``)."""
    prompt = request.prompt
    body: dict[str, Any] = {"prompt": list(prompt) if isinstance(prompt, tuple) else prompt}
    if flavor.dialect == "openai" and model is not None:
        body["model"] = model
    _sampling(request, body, flavor)
    if request.params.logprobs is not None:
        body["logprobs"] = request.params.logprobs
    if request.echo:
        body["echo"] = True
    if request.suffix is not None:
        body["suffix"] = request.suffix
    return body


# -- the stream -------------------------------------------------------------------------------


def _logprob(entry: Mapping[str, Any]) -> TokenLogprob:
    token = str(entry.get("token", ""))
    raw = entry.get("bytes")
    data = bytes(raw) if isinstance(raw, list) else token.encode()
    top = tuple(
        TopLogprob(
            str(t.get("token", "")),
            float(t.get("logprob", 0.0)),
            bytes(t["bytes"]) if isinstance(t.get("bytes"), list) else str(t.get("token")).encode(),
        )
        for t in entry.get("top_logprobs") or ()
        if isinstance(t, Mapping)
    )
    value = entry.get("logprob")
    return TokenLogprob(token, None if value is None else float(value), data, top)


def _legacy_logprobs(value: Mapping[str, Any]) -> tuple[TokenLogprob, ...]:
    tokens = value.get("tokens") or []
    scores = value.get("token_logprobs") or []
    tops = value.get("top_logprobs") or []
    out = []
    for i, token in enumerate(tokens):
        score = scores[i] if i < len(scores) else None
        top = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
        alternatives = tuple(TopLogprob(str(t), float(p), str(t).encode()) for t, p in top.items())
        out.append(
            TokenLogprob(
                str(token),
                None if score is None else float(score),
                str(token).encode(),
                alternatives,
            )
        )
    return tuple(out)


@dataclass
class StreamReader:
    """Reads one upstream stream's events; finals are held until the usage chunk arrives.

    The upstream's usage covers the whole answer; it is put on the last choice's final chunk
    (the services add the choices' completion tokens up and take the prompt's once).
    """

    prompt_estimate: int
    finals: dict[int, EngineChunk] = field(default_factory=dict)
    prompt_filter_results: list[Any] | None = None
    usage: dict[str, int] | None = None
    started: bool = False  # a chunk with content, calls or a finish has been read
    text_chars: int = 0  # characters of text seen (partial usage when the stream dies)
    closed: bool = False

    def feed(self, payload: str) -> list[EngineChunk]:
        """The chunks one ``data:`` payload gives (none for ``[DONE]`` or an annotation frame)."""
        if payload.strip() == "[DONE]":
            return []
        try:
            event = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UpstreamStreamError(f"the upstream sent a line that is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise UpstreamStreamError("the upstream sent an event that is not an object")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamStreamError(f"the upstream failed mid-stream: {message}")
        if event.get("prompt_filter_results") is not None:
            self.prompt_filter_results = list(event["prompt_filter_results"])
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
            }
        out: list[EngineChunk] = []
        for choice in event.get("choices") or ():
            if isinstance(choice, dict):
                chunk = self._choice(choice)
                if chunk is not None:
                    out.append(chunk)
        return out

    def _choice(self, choice: Mapping[str, Any]) -> EngineChunk | None:
        index = int(choice.get("index") or 0)
        delta = choice.get("delta")
        if (  # the stream's most common event: a piece of text and nothing else
            type(delta) is dict
            and len(delta) == 1
            and type(text := delta.get("content")) is str
            and text
            and choice.get("finish_reason") is None
            and not choice.get("logprobs")
            and "content_filter_results" not in choice
        ):
            self.text_chars += len(text)
            self.started = True
            return EngineChunk(text, index)
        text = ""
        calls: tuple[ToolCallDelta, ...] = ()
        if isinstance(delta, Mapping):
            text = delta.get("content") or ""
            calls = _calls(delta)
        elif isinstance(choice.get("text"), str):  # completions
            text = choice["text"]
        logprobs = _chunk_logprobs(choice.get("logprobs"))
        reason = choice.get("finish_reason")
        finish = _FINISH.get(reason) if isinstance(reason, str) else None
        filters = choice.get("content_filter_results")
        self.text_chars += len(text)
        if not (text or calls or logprobs or finish):
            return None
        self.started = True
        chunk = EngineChunk(
            text=text,
            index=index,
            logprobs=logprobs,
            tool_calls=calls,
            filter_results=filters if isinstance(filters, dict) else None,
        )
        if finish is None:
            return chunk
        self.finals[index] = EngineChunk(
            index=index, finish_reason=finish, filter_results=chunk.filter_results
        )
        return (
            EngineChunk(text, index, logprobs=logprobs, tool_calls=calls)
            if (text or calls or logprobs)
            else None
        )

    def close(self) -> list[EngineChunk]:
        """The held finals, with the usage (or, without a usage chunk, estimates); once."""
        if self.closed:
            return []
        self.closed = True
        prompt = self.usage["prompt_tokens"] if self.usage else self.prompt_estimate
        completion = self.usage["completion_tokens"] if self.usage else (self.text_chars + 3) // 4
        indexes = sorted(self.finals)
        out = []
        for position, index in enumerate(indexes):
            last = position == len(indexes) - 1
            final = self.finals[index]
            out.append(
                EngineChunk(
                    index=index,
                    finish_reason=final.finish_reason,
                    prompt_tokens=prompt,
                    completion_tokens=completion if last else 0,
                    filter_results=final.filter_results,
                )
            )
        return out


def _calls(delta: Mapping[str, Any]) -> tuple[ToolCallDelta, ...]:
    out: list[ToolCallDelta] = []
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
        out.append(
            ToolCallDelta(
                index=int(call.get("index") or 0),
                id=call.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments") or "",
            )
        )
    legacy = delta.get("function_call")
    if isinstance(legacy, Mapping):
        name = legacy.get("name")
        out.append(
            ToolCallDelta(
                0,
                id="" if name else None,
                name=name,
                arguments=legacy.get("arguments") or "",
            )
        )
    return tuple(out)


def _chunk_logprobs(value: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(value, Mapping):
        return ()
    content = value.get("content")
    if isinstance(content, list):
        return tuple(_logprob(entry) for entry in content if isinstance(entry, Mapping))
    return _legacy_logprobs(value)
