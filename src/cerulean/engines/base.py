"""The engine interface: what services may ask of any inference backend.

Engines never see wire (pydantic) models. The services translate a request into a
:class:`GenerationRequest` once — the conversation as Azure defines it (roles, assistant tool
calls, tool results with their ids), the tools and ``tool_choice``, ``response_format`` and the
sampling parameters — and read back :class:`EngineChunk` objects: text deltas and tool-call
deltas. How a backend honours the request is its own business: the llama.cpp engine describes
tools in the prompt and decodes under a grammar (:mod:`cerulean.engines.llamacpp.tools`); an
engine in front of a server that takes tools natively passes them on.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from cerulean.errors import ContextLengthExceeded, EngineError
from cerulean.protocol.capabilities import CHAT_CAPABILITIES, Capability

__all__ = [
    "Admission",
    "ChatMessage",
    "ContentPart",
    "Engine",
    "EngineChunk",
    "FinishReason",
    "FunctionSpec",
    "Generation",
    "GenerationRequest",
    "ModelInfo",
    "Phases",
    "Preempted",
    "Priority",
    "ResponseFormat",
    "Role",
    "SamplingParams",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "Tools",
    "request_phases",
    "track_phases",
    "TopLogprob",
    "UpstreamCall",
]

# ``tool_calls``: the answer is one or more calls (the service names it ``function_call`` for the
# legacy functions API); ``content_filter``: an upstream's filter withheld the rest.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
# Called with a prompt's token count before the request is queued (rate limits).
Admission = Callable[[int], Awaitable[None]]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
# ``online``: a client waits for the answer; ``batch``: a batch job's line, run only on slots
# that online requests leave idle (and made to give its slot back when one needs it).
Priority = Literal["online", "batch"]


class Preempted(EngineError):
    """A ``batch`` generation gave its slot to an online request before it finished: nothing
    of it was kept, and the caller runs it again later (docs/batch.md)."""


# -- the conversation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentPart:
    """One part of a message's content: ``text`` and ``refusal`` parts carry ``text``; ``raw``
    is the part as the client sent it, for engines that pass other kinds (images) on."""

    type: str
    text: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A function call of an assistant message; ``arguments`` is JSON text as it was written."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, as Azure defines it.

    ``content`` is text, a tuple of parts, or None (an assistant message that only calls).
    ``tool_calls`` are an assistant's calls (tools API), ``function_call`` its call in the legacy
    functions API (``id`` empty); ``tool_call_id`` names the call a ``tool`` message answers and
    ``name`` the function a ``function`` message answers.
    """

    role: Role | str
    content: str | tuple[ContentPart, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    function_call: ToolCall | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The content as plain text: parts joined by newlines, nothing for None."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content)


@dataclass(frozen=True)
class FunctionSpec:
    """One function the model may call: its parameters are a JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    strict: bool | None = None


@dataclass(frozen=True)
class Tools:
    """The functions of a request and how the model may use them.

    ``choice``: ``none`` (call nothing), ``auto`` (call or answer), ``required`` (call one or
    more), or ``function`` (call the one named ``function``). ``legacy`` marks the functions API
    (``functions``/``function_call``): one call at most, answered in ``message.function_call``.
    """

    functions: tuple[FunctionSpec, ...]
    choice: Literal["none", "auto", "required", "function"] = "auto"
    function: str | None = None
    parallel: bool = True
    legacy: bool = False


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object, or JSON valid against ``schema``."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; ``temperature == 0`` means greedy.

    ``max_tokens`` None lets the model's :meth:`ModelInfo.completion_budget` decide.
    ``grammar`` is a GBNF grammar (root rule ``root``) the answer must match, for engines that
    take grammars; ``logprobs`` None asks for no log probabilities, ``k >= 0`` for each token's
    and its ``k`` likeliest alternatives.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    logprobs: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A generation: a chat ``messages`` conversation, or a raw ``prompt``.

    A ``prompt`` (text, or token ids of the model's tokenizer) is used as it is, without a chat
    template or its stop strings, and the answer's whitespace is kept (legacy completions).
    ``echo`` makes every answer start with the prompt's text; ``suffix`` asks a model with
    fill-in-the-middle tokens for what goes between the prompt and the suffix.
    """

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1  # answers to sample from one evaluation of the prompt
    tools: Tools | None = None
    response_format: ResponseFormat | None = None
    prompt: str | tuple[int, ...] | None = None
    echo: bool = False
    suffix: str | None = None  # text after the completion (fill-in-the-middle models only)
    # Engines that share slots put ``online`` requests first; a ``batch`` request never waits
    # for the queue timeout and may end in :class:`Preempted` before any output.
    priority: Priority = "online"


# -- what comes back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TopLogprob:
    """One of the likeliest tokens at a position."""

    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    """A token of the answer with its log probability and the likeliest tokens at its position.

    ``logprob`` is None only for the first token of an echoed prompt (nothing predicts it).
    """

    token: str
    logprob: float | None
    bytes: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of call ``index`` of an answer: its first piece carries ``id`` and ``name``, the
    following ones pieces of the ``arguments`` JSON text as they are generated."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class EngineChunk:
    """A piece of answer ``index``: text, tool-call pieces, or both; the answer's last chunk
    carries its finish reason and usage.

    ``logprobs`` (when asked for) covers the tokens whose text this chunk shows.
    """

    text: str = ""
    index: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()
    # Content-filter results an engine evaluated (an Azure upstream's); None: the edge's own.
    filter_results: Mapping[str, Any] | None = None
    # Set on an annotation-only chunk of the asynchronous filter: the characters it covers
    # (``check_offset``, ``start_offset``, ``end_offset``; docs/content-filtering.md).
    filter_offsets: Mapping[str, int] | None = None


# -- the model and the engine -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What clients and services may know about a loaded model."""

    name: str
    context_length: int
    default_max_tokens: int | None
    capabilities: frozenset[Capability] = CHAT_CAPABILITIES
    dimensions: int | None = None  # length of an embedding vector (embedding models)
    # Identifies the weights and the settings that shape outputs (``system_fingerprint``).
    fingerprint: str | None = None
    # Kinds of content part the model reads besides text: "image_url", "input_audio".
    content_parts: frozenset[str] = frozenset()
    # Whether the context is checked here (a local model) or by the engine's server (remote:
    # the edge only estimates the prompt, so it reserves the context but never refuses on it).
    context_checked: bool = True

    def completion_budget(
        self, prompt_tokens: int, max_tokens: int | None, *, raw: bool = False
    ) -> int:
        """The tokens an answer to a ``prompt_tokens`` prompt may take: the one rule that both
        the rate limits (the reservation they charge) and the engines (where they stop) follow.

        ``max_tokens`` when given, else the model's ``default_max_tokens``, else the rest of the
        context, never beyond the context. A prompt that fills the context, or a ``max_tokens``
        that does not fit beside it, is Azure's 400 ``context_length_exceeded`` (``raw``: in the
        legacy completions wording).
        """
        limit = self.context_length
        if not self.context_checked:
            if max_tokens is not None:
                return max_tokens
            return self.default_max_tokens or max(limit - prompt_tokens, 1)
        if max_tokens is not None and prompt_tokens + max_tokens > limit:
            raise ContextLengthExceeded(
                limit=limit, prompt_tokens=prompt_tokens, completion_tokens=max_tokens, prompt=raw
            )
        if prompt_tokens >= limit:
            raise ContextLengthExceeded(
                limit=limit, prompt_tokens=prompt_tokens, completion_tokens=None, prompt=raw
            )
        room = limit - prompt_tokens
        cap = max_tokens if max_tokens is not None else self.default_max_tokens
        return room if cap is None else min(cap, room)


@dataclass(slots=True)
class UpstreamCall:
    """One call a remote engine made to an upstream for a request (``time.perf_counter()``)."""

    upstream: str
    address: str  # host[:port] of its URL
    started: float
    first_byte: float | None = None
    ended: float | None = None
    error: str | None = None  # the failure's kind (timeout, server_error...), None if it served


@dataclass(slots=True)
class Phases:
    """When a generation's stages happened (``time.perf_counter()`` readings), for its trace.

    A local engine: ``queued`` (put in line for a slot) and ``admitted`` (took its slot: prompt
    processing starts). A remote one: its ``calls`` to upstreams, failed ones included.
    """

    queued: float | None = None
    admitted: float | None = None
    calls: list[UpstreamCall] = field(default_factory=list)


_PHASES: ContextVar[Phases | None] = ContextVar("cerulean_phases", default=None)


def track_phases() -> Phases:
    """Open the phases of the request served in this context: the services call it before
    :meth:`Engine.generate`, so that the stages are known even when it fails."""
    phases = Phases()
    _PHASES.set(phases)
    return phases


def request_phases() -> Phases:
    """Where an engine notes a request's stages: the one :func:`track_phases` opened in this
    context, else a throwaway."""
    phases = _PHASES.get()
    return phases if phases is not None else Phases()


class Generation(abc.ABC):
    """A started generation: iterate it for chunks; ``aclose`` cancels it and frees its slot.

    ``prompt_filter_results`` are the prompt's filter results when the engine evaluated them (an
    Azure upstream), known once the first chunk has arrived; None: the edge's own.
    """

    prompt_tokens: int
    prompt_filter_results: list[Any] | None = None
    phases: Phases | None = None  # a remote generation's calls (see request_phases)
    # Its first chunk has arrived already (a remote answer is opened by reading it): the
    # stream's opening events can go out in one write with it, as nothing waits for them.
    first_chunk_in_hand: bool = False

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[EngineChunk]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Cancel the generation if it is still running; safe to call more than once."""


class Engine(abc.ABC):
    """An inference backend serving one model."""

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """The model this engine serves."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether :meth:`load` has finished and requests can be served."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model; blocking, called off the event loop."""

    @abc.abstractmethod
    async def generate(
        self, request: GenerationRequest, *, admit: Admission | None = None
    ) -> Generation:
        """Validate and start a generation.

        ``admit``, when given, is awaited once with the prompt's token count as soon as the
        prompt is tokenized, before any other check and before the request takes a place in
        line: the caller charges its rate limits there without tokenizing the prompt again, and
        an exception it raises ends the request.

        Raises :class:`~cerulean.errors.ContextLengthExceeded` (and other
        :class:`~cerulean.errors.APIError` subclasses, such as a 400 for a parameter this engine
        cannot honour) *before* any output, so that a streaming response can still answer with
        a plain JSON error.
        """

    def stats(self) -> dict[str, int]:
        """Gauges and counters for ``/metrics`` (slots busy, requests waiting...)."""
        return {}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop work and release the model."""
