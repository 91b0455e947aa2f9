"""The engine interface: what services may ask of any inference backend.

Engines never see wire (pydantic) models: services translate a request into a
:class:`GenerationRequest` once, and read back :class:`EngineChunk` objects.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Admission",
    "CHAT_CAPABILITIES",
    "Capability",
    "ChatMessage",
    "Engine",
    "EngineChunk",
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "ModelInfo",
    "ResponseFormat",
    "SamplingParams",
    "TokenLogprob",
    "TopLogprob",
]

FinishReason = Literal["stop", "length"]
# Called with a prompt's token count before the request is queued (rate limits).
Admission = Callable[[int], Awaitable[None]]
# What a model can serve, named as Azure's model object names them (``capabilities``).
Capability = Literal["chat_completion", "completion", "embeddings"]
CHAT_CAPABILITIES: frozenset[Capability] = frozenset({"chat_completion", "completion"})


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, content already flattened to text."""

    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object, or JSON valid against ``schema``.

    With ``allow_text`` the answer may instead be plain text that does not start with ``{`` or
    ``[`` (function calling with ``tool_choice: auto``).
    """

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    allow_text: bool = False


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF (llama.cpp grammar) the answer must match; root rule "root"
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    response_format: ResponseFormat | None = None
    # None: no log probabilities; k >= 0: each token's logprob and its k likeliest alternatives.
    logprobs: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A generation: chat ``messages``, or a raw ``prompt``, plus sampling parameters.

    A ``prompt`` (text, or token ids of the model's tokenizer) is used as it is, without a chat
    template or its stop strings, and the answer's whitespace is kept (legacy completions).
    ``echo`` makes every answer start with the prompt's text; ``suffix`` asks a model with
    fill-in-the-middle tokens for what goes between the prompt and the suffix.
    """

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1  # answers to sample from one evaluation of the prompt
    prompt: str | tuple[int, ...] | None = None
    echo: bool = False
    suffix: str | None = None  # text after the completion (fill-in-the-middle models only)


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
class EngineChunk:
    """A piece of answer ``index``; the answer's last chunk carries finish reason and usage.

    ``logprobs`` (when asked for) covers the tokens whose text this chunk shows.
    """

    text: str = ""
    index: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


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


class Generation(abc.ABC):
    """A started generation: iterate it for chunks; ``aclose`` cancels it and frees its slot."""

    prompt_tokens: int

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
        :class:`~cerulean.errors.APIError` subclasses) *before* any output, so that a streaming
        response can still answer with a plain JSON error.
        """

    @abc.abstractmethod
    async def count_prompt_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """Tokens the rendered prompt for ``messages`` takes in this model."""

    def stats(self) -> dict[str, int]:
        """Gauges and counters for ``/metrics`` (slots busy, requests waiting...)."""
        return {}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop work and release the model."""
