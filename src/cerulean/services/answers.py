"""What chat and legacy completions share: the request's sampling, the answer's context and
usage, the content-filter annotations, and the guard every event stream runs under.

The two surfaces differ only where Azure makes them differ (chunk shapes, prompt counts, the
completions ``max_tokens`` default of 16); everything else is here, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from cerulean.engines.base import Engine, EngineChunk, Priority, SamplingParams
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import APIError, EngineError, InternalServerError, InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.ids import completion_id
from cerulean.protocol.sse import DONE, encode_event, error_event
from cerulean.services import accounting
from cerulean.services.admission import Quota
from cerulean.services.filtering.pipeline import NOT_FILTERED, ContentFilter
from cerulean.store.base import DeploymentRecord

__all__ = [
    "NOT_FILTERED",
    "Answer",
    "AnswerContext",
    "InferenceCall",
    "Meter",
    "final_usage",
    "annotation_chunk",
    "observe_request",
    "guarded",
    "prompt_filter_chunk",
    "prompt_filter_results",
    "sampling",
    "usage",
    "with_usage",
]

logger = logging.getLogger(__name__)


E = TypeVar("E", Engine, EmbeddingEngine)


@dataclass(frozen=True)
class InferenceCall(Generic[E]):
    """One inference request as the services see it: where it goes and under which rules."""

    deployment: DeploymentRecord
    engine: E
    version: ApiVersion
    quota: Quota
    request_id: str
    # The deployment's content filter (None: nothing is evaluated; docs/content-filtering.md).
    content_filter: ContentFilter | None = None
    priority: Priority = "online"  # "batch": a batch job's line (idle slots only)


@dataclass
class Answer:
    """A started answer: a JSON body to collect, or an event stream, and the response headers.

    Either way the engine work has started and every error that can come before output has
    been raised; :meth:`aclose` cancels the work (a client that went away).
    """

    headers: dict[str, str]
    stream: bool
    collect: Callable[[], Awaitable[dict[str, Any]]]
    events: Callable[[], AsyncIterator[bytes]]
    aclose: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class AnswerContext:
    """Model, api-version and fingerprint of an answer, with its id and creation time."""

    model: str
    api_version: ApiVersion
    fingerprint: str | None = None
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    @cached_property
    def annotate(self) -> bool:
        """Whether content-filter annotations belong in the answer (§4.2)."""
        return self.api_version.has_content_filter_annotations

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add ``system_fingerprint`` where the version has it (from 2023-12-01-preview)."""
        if self.fingerprint is not None and self.api_version.at_least("2023-12-01-preview"):
            body["system_fingerprint"] = self.fingerprint
        return body


@dataclass
class Meter:
    """What one request was charged at admission and what it really used, so that the service
    can charge an overshoot at the end (``Quota.settle``). A choice that never finished (a
    stream cut mid-answer) counts about four characters a token.

    It also tells the request's record (:mod:`~cerulean.services.accounting`) when the first
    output came, how the answers finished and, only when the record may capture content, their
    text."""

    charged: int = 0
    record: accounting.RequestRecord = field(default_factory=accounting.current)
    _prompts: dict[int, int] = field(default_factory=dict)  # prompt -> its tokens
    _completion: int = 0
    _unfinished: dict[tuple[int, int], int] = field(default_factory=dict)  # choice -> characters
    _finishes: list[str] = field(default_factory=list)

    def add(self, chunk: EngineChunk, prompt: int = 0) -> None:
        """Count one engine chunk of the answers to prompt number ``prompt``."""
        key = (prompt, chunk.index)
        if chunk.text or chunk.tool_calls:
            record = self.record
            if record.first_output is None:
                record.output()
            if record.output_texts is not None:
                _capture(record.output_texts, chunk)
        if chunk.finish_reason is None:
            self._unfinished[key] = self._unfinished.get(key, 0) + len(chunk.text)
            return
        self._unfinished.pop(key, None)
        self._prompts[prompt] = max(self._prompts.get(prompt, 0), chunk.prompt_tokens)
        self._completion += chunk.completion_tokens
        self._finishes.append(chunk.finish_reason)

    @property
    def used(self) -> int:
        cut = sum((chars + 3) // 4 for chars in self._unfinished.values())
        return sum(self._prompts.values()) + self._completion + cut

    async def settle(self, call: InferenceCall[Any]) -> None:
        record = self.record
        cut = sum((chars + 3) // 4 for chars in self._unfinished.values())
        record.prompt_tokens = sum(self._prompts.values())
        record.completion_tokens = self._completion + cut
        record.finish_reasons = tuple(self._finishes)
        await call.quota.settle(call.deployment, charged=self.charged, used=self.used)


def _capture(texts: dict[int, str], chunk: EngineChunk) -> None:
    """Keep an answer's text (content capture, opted in): its text and its calls' pieces."""
    pieces = [chunk.text, *(f"{d.name or ''}{d.arguments}" for d in chunk.tool_calls)]
    texts[chunk.index] = texts.get(chunk.index, "") + "".join(pieces)


def observe_request(call: InferenceCall[Any], model: str, params: SamplingParams, n: int) -> None:
    """Tell the request's record what the trace wants: the response model and (only when
    traced) the request parameters."""
    record = accounting.current()
    record.response_model = model
    if record.traced:
        record.request_params = {
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.top_p": params.top_p,
            "gen_ai.request.seed": params.seed,
            "gen_ai.request.choice.count": n if n != 1 else None,
            "gen_ai.request.stop_sequences": list(params.stop) or None,
            "gen_ai.request.presence_penalty": params.presence_penalty or None,
            "gen_ai.request.frequency_penalty": params.frequency_penalty or None,
        }
    if record.capture:
        record.output_texts = {}


# -- the request ----------------------------------------------------------------------------------


def sampling(body: Any, *, max_tokens: int | None, logprobs: int | None = None) -> SamplingParams:
    """The sampling parameters chat and completions bodies share, with Azure's defaults
    (temperature and top_p 1, no penalties)."""
    return SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=max_tokens,
        stop=_stop_strings(body.stop),
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias_pairs(body.logit_bias),
        logprobs=logprobs,
    )


def _stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise InvalidRequest(f"{stops!r} is too long - 'stop'", param="stop")
    return tuple(s for s in stops if s)


def _logit_bias_pairs(biases: dict[str, int] | None) -> tuple[tuple[int, float], ...]:
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


# -- the answer -----------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def final_usage(finals: Iterable[EngineChunk]) -> tuple[int, int]:
    """Prompt and completion tokens of one prompt's answers: the prompt once, every answer's
    completion tokens."""
    chunks = list(finals)
    prompt = chunks[0].prompt_tokens if chunks else 0
    return prompt, sum(chunk.completion_tokens for chunk in chunks)


def prompt_filter_results(prompts: int) -> list[dict[str, Any]]:
    """``prompt_filter_results`` of prompts no filter evaluated: one entry per prompt."""
    return [{"prompt_index": i, "content_filter_results": NOT_FILTERED} for i in range(prompts)]


def prompt_filter_chunk(
    prompts: int = 1, results: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The stream's first event: the prompt's filter results and nothing else (§4.4 rule 2)."""
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": results or prompt_filter_results(prompts),
    }


def annotation_chunk(chunk: EngineChunk, index: int) -> dict[str, Any]:
    """An asynchronous filter's annotation chunk for choice ``index`` (id and model empty)."""
    return {
        "choices": [
            {
                "index": index,
                "finish_reason": None,
                "content_filter_results": dict(chunk.filter_results or {}),
                "content_filter_offsets": dict(chunk.filter_offsets or {}),
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def with_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    """With ``stream_options.include_usage`` every chunk carries ``"usage": null``."""
    if include_usage:
        chunk["usage"] = None
    return chunk


async def guarded(
    events: AsyncIterator[dict[str, Any] | bytes],
    *,
    request_id: str,
    close: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """An answer's events as SSE, ended by ``data: [DONE]`` (an event already encoded, bytes,
    is sent as it is).

    An error after the first byte becomes a final ``data: {"error": ...}`` event (§4.4) and the
    stream ends there, without ``[DONE]``, so that no client mistakes the cut answer for a whole
    one (docs/compatibility.md, "Streams that fail"); closing this iterator (a client
    disconnect) runs ``close``, which cancels the generations and frees their engine slots.
    """
    try:
        async for event in events:
            yield event if isinstance(event, bytes) else encode_event(event)
        yield DONE
    except APIError as exc:
        yield error_event(exc.body())
    except EngineError:
        logger.exception("stream failed")
        yield error_event(InternalServerError(request_id).body())
    finally:
        await close()
