"""Legacy completions: wire request → engine requests (one per prompt), output → Azure's JSON/SSE.

Each prompt is its own engine request with ``n`` (or ``best_of``) answers from one evaluation of
the prompt; choice ``j`` of prompt ``i`` has index ``i * n + j``, as OpenAI numbers them. The
prompt is used raw (no chat template), which is the embedded base model's natural mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cerulean.engines.base import (
    Engine,
    EngineChunk,
    Generation,
    GenerationRequest,
    ModelInfo,
    TokenLogprob,
    track_phases,
)
from cerulean.errors import EngineError, InvalidRequest
from cerulean.protocol.completions import DEFAULT_MAX_TOKENS, CreateCompletionRequest, Prompt
from cerulean.protocol.ids import completion_id
from cerulean.quota.base import estimate_tokens
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
from cerulean.services.logprobs import LegacyLogprobs, mean_logprob

__all__ = [
    "CompletionContext",
    "CompletionPlan",
    "create_completion",
    "plan_completion",
    "prompt_estimate",
]

MAX_PROMPTS = 2048  # the most prompts one request may carry (Azure's documented limit)


@dataclass(frozen=True)
class CompletionPlan:
    """What to ask the engine, and how to turn its answers into choices."""

    requests: list[GenerationRequest]
    n: int  # choices returned per prompt
    candidates: int  # answers generated per prompt (best_of, or n)
    logprobs: int | None  # the legacy logprobs the client asked for
    offsets: list[int]  # characters before the completion of each prompt (for text_offset)


@dataclass(frozen=True)
class CompletionContext(AnswerContext):
    """What every body or chunk of one completions request shares."""

    id: str = field(default_factory=lambda: completion_id("cmpl-"))
    # The prompts' filter results when the deployment's policy evaluated them.
    prompt_filters: list[dict[str, Any]] | None = None

    def prompt_filter_results(self, prompts: int) -> list[dict[str, Any]]:
        return self.prompt_filters or prompt_filter_results(prompts)


async def _screen_prompts(
    call: InferenceCall[Engine], plan: CompletionPlan
) -> list[dict[str, Any]] | None:
    """Every prompt's filter results (Azure's 400 for the first the policy filters); None when
    the policy evaluates nothing. A prompt of token ids is not read: annotated not filtered."""
    content_filter = call.content_filter
    if content_filter is None or not content_filter.active:
        return None
    out = []
    for i, wanted in enumerate(plan.requests):
        prompt = wanted.prompt
        if isinstance(prompt, tuple):
            out.append({"prompt_index": i, "content_filter_results": NOT_FILTERED})
            continue
        text = (prompt or "") + ("\n" + wanted.suffix if wanted.suffix else "")
        entry = (await content_filter.check_prompts([text]))[0]
        out.append({**entry, "prompt_index": i})
    return out


# -- request -------------------------------------------------------------------------------


def _prompts(prompt: Prompt) -> list[str | tuple[int, ...]]:
    """The prompts of a request: each string or token array on its own."""
    if prompt is None:
        return [""]  # the start of a new document
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("[] is too short - 'prompt'", param="prompt")
    if len(prompt) > MAX_PROMPTS:
        raise InvalidRequest(
            f"Too many prompts: {len(prompt)}; at most {MAX_PROMPTS} are allowed - 'prompt'",
            param="prompt",
        )
    if all(isinstance(p, int) for p in prompt):
        return [tuple(p for p in prompt if isinstance(p, int))]
    out: list[str | tuple[int, ...]] = []
    for i, item in enumerate(prompt):
        if isinstance(item, list):
            if not item:
                raise InvalidRequest(f"[] is too short - 'prompt.{i}'", param=f"prompt.{i}")
            out.append(tuple(item))
        elif isinstance(item, str):
            out.append(item)
    return out


def _refuse(body: CreateCompletionRequest, n: int, candidates: int) -> None:
    if body.suffix and body.echo:
        raise InvalidRequest("'echo' cannot be used together with 'suffix'.", param="echo")
    if candidates < n:
        raise InvalidRequest(
            f"best_of must be greater than or equal to n (best_of={candidates}, n={n}).",
            param="best_of",
        )
    if body.stream and candidates > n:
        raise InvalidRequest(
            "Cannot stream results when best_of is greater than n: the best answers are only "
            "known once every candidate has finished.",
            param="best_of",
        )


def plan_completion(body: CreateCompletionRequest) -> CompletionPlan:
    """Translate a validated wire request into engine requests (raises 400s)."""
    n = body.n or 1
    candidates = body.best_of or n
    _refuse(body, n, candidates)
    engine_logprobs = body.logprobs
    if engine_logprobs is None and candidates > n:
        engine_logprobs = 0  # best_of ranks the candidates by their mean log probability
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    params = sampling(body, max_tokens=max_tokens, logprobs=engine_logprobs)
    prompts = _prompts(body.prompt)
    requests = [
        GenerationRequest(
            messages=(),
            params=params,
            n=candidates,
            prompt=p,
            echo=bool(body.echo),
            suffix=body.suffix or None,
        )
        for p in prompts
    ]
    offsets = [len(p) if isinstance(p, str) and not body.echo else 0 for p in prompts]
    return CompletionPlan(requests, n, candidates, body.logprobs, offsets)


def prompt_estimate(request: GenerationRequest) -> int:
    """A prompt's tokens for the rate limits, before tokenizing: ids counted, text at about
    four characters a token (the rule of thumb OpenAI and Azure give for English)."""
    prompt = request.prompt
    if isinstance(prompt, tuple):
        return len(prompt)
    return (len(prompt or "") + 3) // 4 + 1


def check_fits(info: ModelInfo, plan: CompletionPlan) -> None:
    """Before anything is charged: a ``max_tokens`` that cannot fit the context beside even a
    one-token prompt is the 400 ``context_length_exceeded``, never a 429 from its estimate (the
    prompts are tokenized later, so the exact check of each prompt stays with the engine)."""
    if not info.context_checked:
        return
    for wanted in plan.requests:
        max_tokens = wanted.params.max_tokens
        if max_tokens is not None and max_tokens >= info.context_length:
            info.completion_budget(max(prompt_estimate(wanted), 1), max_tokens, raw=True)


def admission_estimate(info: ModelInfo, plan: CompletionPlan) -> int:
    """Azure's estimate for every prompt: its (estimated) tokens plus ``max_tokens`` for each of
    ``max(n, best_of)`` answers, the budget never beyond the model's context.

    The prompts are not tokenized yet (the engine does that, prompt by prompt), so a prompt that
    does not fit gets its 400 from the engine after admission.
    """
    return sum(
        estimate_tokens(
            prompt_estimate(wanted),
            min(wanted.params.max_tokens or 0, info.context_length),
            default_reservation=0,
            n=plan.n,
            best_of=plan.candidates,
        )
        for wanted in plan.requests
    )


async def create_completion(call: InferenceCall[Engine], body: CreateCompletionRequest) -> Answer:
    """Admit, start and shape one legacy completions request (errors come before any output)."""
    plan = plan_completion(body)
    info = call.engine.info
    check_fits(info, plan)
    choices = max(plan.n, plan.candidates)
    # Prompts are not tokenized yet: the budget without max_tokens is the default, else the
    # context (the engine's own check is exact, later).
    default = info.default_max_tokens or info.context_length
    answers = sum(choices * (w.params.max_tokens or default) for w in plan.requests)
    call.quota.check_answers(call.deployment, choices=choices, tokens=answers)
    meter = Meter(charged=admission_estimate(info, plan))
    screened = await _screen_prompts(call, plan)
    headers = await call.quota.admit(call.deployment, tokens=meter.charged, capability="completion")
    meter.record.phases = track_phases()
    generations = await _start(call.engine, plan)
    if screened is not None and call.content_filter is not None:
        generations = [call.content_filter.wrap(g, stream=bool(body.stream)) for g in generations]
    if plan.requests and generations:
        first = plan.requests[0]
        observe_request(call, info.name, first.params, plan.n)
    if meter.record.capture:
        meter.record.input_messages = [
            {"role": "user", "content": w.prompt if isinstance(w.prompt, str) else repr(w.prompt)}
            for w in plan.requests
        ]
    ctx = CompletionContext(
        model=info.name,
        api_version=call.version,
        fingerprint=info.fingerprint,
        prompt_filters=screened,
    )
    headers["x-ms-deployment-name"] = call.deployment.name
    include_usage = bool((body.stream_options or {}).get("include_usage"))

    async def close() -> None:
        await _close_all(generations)
        await meter.settle(call)

    return Answer(
        headers=headers,
        stream=bool(body.stream),
        collect=lambda: _body(ctx, plan, generations, meter, close),
        events=lambda: guarded(
            _events(ctx, plan, generations, meter, include_usage=include_usage),
            request_id=call.request_id,
            close=close,
        ),
        aclose=close,
    )


async def _start(engine: Engine, plan: CompletionPlan) -> list[Generation]:
    """Start every prompt's generation, one after the other as slots allow.

    Every error (a prompt too long, a bad token id) comes before any output; generations already
    started are then cancelled.
    """
    started: list[Generation] = []
    try:
        for request in plan.requests:
            started.append(await engine.generate(request))
    except InvalidRequest as exc:
        await _close_all(started)
        if exc.param == "n" and plan.candidates > plan.n:
            raise InvalidRequest(
                exc.message.replace("n=", "best_of=", 1), param="best_of"
            ) from None
        raise
    except BaseException:
        await _close_all(started)
        raise
    return started


async def _close_all(generations: Sequence[Generation]) -> None:
    for generation in generations:
        await generation.aclose()


# -- the JSON body --------------------------------------------------------------------------------


@dataclass
class _Answer:
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: EngineChunk | None = None
    filters: Any = None  # the content filter's results, when it evaluated the answer


async def _collect(
    generation: Generation, candidates: int, meter: Meter, prompt: int
) -> list[_Answer]:
    answers = [_Answer() for _ in range(candidates)]
    try:
        async for chunk in generation:
            meter.add(chunk, prompt)
            answer = answers[chunk.index]
            answer.text += chunk.text
            answer.logprobs.extend(chunk.logprobs)
            if chunk.filter_results is not None:
                answer.filters = chunk.filter_results
            if chunk.finish_reason is not None:
                answer.final = chunk
    finally:
        await generation.aclose()
    if any(answer.final is None for answer in answers):
        raise EngineError("the engine ended without a finish reason")
    return answers


def _best(answers: list[_Answer], n: int) -> list[_Answer]:
    """The ``n`` answers with the highest mean log probability per token (best first)."""
    if len(answers) == n:
        return answers
    ranked = sorted(range(len(answers)), key=lambda j: -mean_logprob(answers[j].logprobs))
    return [answers[j] for j in ranked[:n]]


def _choice(
    ctx: CompletionContext,
    index: int,
    text: str,
    logprobs: dict[str, Any] | None,
    finish_reason: str | None,
    filters: Any = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "text": text,
        "index": index,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }
    if ctx.annotate:
        default = NOT_FILTERED if text else {}
        choice["content_filter_results"] = dict(filters) if filters is not None else default
    return choice


async def _body(
    ctx: CompletionContext,
    plan: CompletionPlan,
    generations: list[Generation],
    meter: Meter,
    close: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """Run every generation to its end and build the ``text_completion`` body."""
    try:
        results = await asyncio.gather(
            *(_collect(g, plan.candidates, meter, i) for i, g in enumerate(generations))
        )
    finally:
        await close()
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for i, answers in enumerate(results):
        prompt, completion = final_usage(a.final for a in answers if a.final is not None)
        prompt_tokens += prompt
        completion_tokens += completion
        for j, answer in enumerate(_best(answers, plan.n)):
            shaped = None
            if plan.logprobs is not None:
                shaped = LegacyLogprobs(plan.offsets[i]).shape(answer.logprobs)
            reason = answer.final.finish_reason if answer.final else None
            choices.append(
                _choice(ctx, i * plan.n + j, answer.text, shaped, reason, answer.filters)
            )
    body: dict[str, Any] = ctx.stamp(
        {
            "id": ctx.id,
            "object": "text_completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
        }
    )
    if ctx.annotate:
        body["prompt_filter_results"] = ctx.prompt_filter_results(len(generations))
    return body


# -- the event stream -----------------------------------------------------------------------------


def _event(ctx: CompletionContext, choice: dict[str, Any]) -> dict[str, Any]:
    return ctx.stamp(
        {
            "id": ctx.id,
            "object": "text_completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [choice],
        }
    )


async def _events(
    ctx: CompletionContext,
    plan: CompletionPlan,
    generations: list[Generation],
    meter: Meter,
    *,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The stream's events: prompt-filter chunk, text chunks (the last with its finish), usage.

    The prompts' answers follow one another (each one's chunks in order).
    """
    if ctx.annotate:
        yield prompt_filter_chunk(len(generations), ctx.prompt_filters)
    prompt_tokens = completion_tokens = 0
    for i, generation in enumerate(generations):
        shapers = [LegacyLogprobs(plan.offsets[i]) for _ in range(plan.n)]
        async for chunk in generation:
            meter.add(chunk, i)
            if chunk.filter_offsets is not None:  # the asynchronous filter's annotation
                if ctx.annotate:
                    yield annotation_chunk(chunk, i * plan.n + chunk.index)
                continue
            if chunk.finish_reason is not None:
                prompt_tokens += chunk.prompt_tokens if chunk.index == 0 else 0
                completion_tokens += chunk.completion_tokens
            elif not chunk.text:
                continue
            shaped = None
            if plan.logprobs is not None:
                shaped = shapers[chunk.index].shape(chunk.logprobs)
            index = i * plan.n + chunk.index
            choice = _choice(
                ctx, index, chunk.text, shaped, chunk.finish_reason, chunk.filter_results
            )
            yield with_usage(_event(ctx, choice), include_usage)
    if include_usage:
        yield {**_event(ctx, {}), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
