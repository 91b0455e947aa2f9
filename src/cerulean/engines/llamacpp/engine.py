"""The llama.cpp engine: one model, many requests at once (continuous batching).

The event loop only tokenizes (in a worker thread), checks budgets, and awaits queues; the
:class:`~.scheduler.Scheduler` thread does all llama.cpp work. A request first waits for a slot
(up to ``queue_timeout`` seconds, in a line of at most ``queue_size``), then streams its tokens as
they are sampled. Closing the generation — a client that disconnects — cancels it at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cerulean.engines.base import (
    Admission,
    ChatMessage,
    Engine,
    EngineChunk,
    Generation,
    GenerationRequest,
    ModelInfo,
    ToolCallDelta,
    Tools,
    request_phases,
)
from cerulean.engines.llamacpp import tools as calls
from cerulean.engines.llamacpp.grammars import json_grammar
from cerulean.engines.llamacpp.jobs import Job
from cerulean.engines.llamacpp.native import (
    ALL_LAYERS,
    ContextConfig,
    NativeContext,
    NativeModel,
    resolve_gpu_layers,
)
from cerulean.engines.llamacpp.prefix import common_prefix
from cerulean.engines.llamacpp.prompts import BASE_FORMATS, PromptFormat, TemplateFormat, flatten
from cerulean.engines.llamacpp.sampling import grammar_error
from cerulean.engines.llamacpp.scheduler import QueueFull, Scheduler, SchedulerConfig
from cerulean.engines.llamacpp.turns import CpuTurns
from cerulean.errors import (
    EngineError,
    InvalidRequest,
    ServerBusy,
    ServiceUnavailable,
)

__all__ = ["ALL_LAYERS", "LlamaCppEngine", "ModelSpec", "PromptPlan"]

logger = logging.getLogger(__name__)

# Suggested wait before retrying a 429/503: a slot frees within about one answer's time.
_RETRY_AFTER_S = 1
# Logits rows for prompt positions per decode step (echo with logprobs); 1 MiB each for Gemma.
_SCORE_ROWS = 16


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how.

    ``n_ctx`` is the context of *one* request (a slot); the KV cache holds ``parallel`` of them.
    ``n_gpu_layers`` None offloads every layer when llama.cpp was built with a GPU backend and
    finds a device, and none otherwise. ``base_format`` names a
    :data:`~cerulean.engines.llamacpp.prompts.BASE_FORMATS` entry used when the GGUF has no chat
    template.
    """

    name: str
    path: Path
    n_ctx: int = 4096
    n_threads: int = 1
    n_gpu_layers: int | None = None
    default_max_tokens: int | None = None
    base_format: str = "transcript"
    parallel: int = 8
    n_batch: int = 1024
    queue_size: int = 64
    queue_timeout: float = 60.0
    cache_entries: int = 16
    cache_tokens: int | None = None  # budget of cached prefixes; default one slot's context
    swa_full: bool = False
    fair_share: bool = True  # a request's choices beyond its share wait while others queue
    # Shared by the process's llama.cpp contexts on the CPU: they compute in turns (see
    # :mod:`.turns`); unused when the model runs on a GPU.
    turns: CpuTurns | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PromptPlan:
    """A rendered, tokenized prompt: its tokens, stop strings, and where messages end in it."""

    tokens: list[int]
    stops: tuple[str, ...]
    anchors: tuple[int, ...]


class _Generation(Generation):
    def __init__(
        self,
        engine: LlamaCppEngine,
        job: Job,
        queue: asyncio.Queue[list[EngineChunk | BaseException]],
    ):
        self._engine = engine
        self._job = job
        self._queue = queue
        self.prompt_tokens = len(job.prompt)

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        finished = 0
        try:
            while finished < self._job.n:
                for item in await self._queue.get():
                    if isinstance(item, BaseException):
                        raise item
                    if item.finish_reason is not None:
                        finished += 1
                    yield item
        finally:
            if finished < self._job.n:
                self._engine.cancel(self._job)

    async def aclose(self) -> None:
        self._engine.cancel(self._job)


class _Nothing(Generation):
    """``max_tokens`` 0 without prompt logprobs: the echo (if asked) and a finish, no slot."""

    def __init__(self, prompt_tokens: int, n: int, echo: str | None) -> None:
        self.prompt_tokens = prompt_tokens
        self._n = n
        self._echo = echo

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        for index in range(self._n):
            if self._echo:
                yield EngineChunk(text=self._echo, index=index)
            yield EngineChunk(finish_reason="length", index=index, prompt_tokens=self.prompt_tokens)

    async def aclose(self) -> None:
        return None


class _Waves(Generation):
    """A request's choices in waves, each started when the one before has finished.

    Waves are at most the slots; with fair sharing (:meth:`LlamaCppEngine.fair_share`) each is
    at most the request's share when it starts, so other requests' choices get slots between
    waves. Choice ``i`` has index ``i`` and seed ``seed + i`` whatever the waves' sizes. The
    first wave was admitted before this object exists (so its errors precede any output); a
    later wave that finds the line full waits and retries for up to the queue timeout.
    """

    def __init__(
        self,
        engine: LlamaCppEngine,
        first: Generation,
        request: GenerationRequest,
        first_size: int,
        seed: int,
        *,
        keep_stops: bool = False,
    ) -> None:
        self._engine = engine
        self._keep_stops = keep_stops
        self._current: Generation | None = first
        self._request = request
        self._first_size = first_size
        self._seed = seed
        self._closed = False
        self.prompt_tokens = first.prompt_tokens

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        offset, size = 0, self._first_size
        while offset < self._request.n:
            if self._closed:
                return
            if offset > 0:
                size = min(
                    self._engine.wave_size(self._request.n - offset), self._request.n - offset
                )
                self._current = await self._start(_wave(self._request, offset, size, self._seed))
            generation = self._current
            assert generation is not None
            async for chunk in generation:
                yield replace(chunk, index=chunk.index + offset)
            offset += size

    async def _start(self, wave: GenerationRequest) -> Generation:
        deadline = asyncio.get_running_loop().time() + self._engine.spec.queue_timeout
        while True:
            try:
                return await self._engine._generate(wave, keep_stops=self._keep_stops)
            except ServerBusy:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        self._closed = True
        if self._current is not None:
            await self._current.aclose()


def _wave(request: GenerationRequest, offset: int, size: int, seed: int) -> GenerationRequest:
    """Choices ``offset`` to ``offset + size`` of ``request``, with their seeds."""
    return replace(request, n=size, params=replace(request.params, seed=seed + offset))


class _Calls(Generation):
    """An answer that may call functions: each choice's text read by a
    :class:`~cerulean.engines.llamacpp.tools.CallReader`, so that the call form comes out as
    tool-call deltas (never as content) and a finished call as ``finish_reason: tool_calls``."""

    def __init__(self, inner: Generation, *, allow_text: bool) -> None:
        self._inner = inner
        self._allow_text = allow_text
        self.prompt_tokens = inner.prompt_tokens

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        readers: dict[int, calls.CallReader] = {}
        async for chunk in self._inner:
            reader = readers.get(chunk.index)
            if reader is None:
                reader = readers[chunk.index] = calls.CallReader(self._allow_text)
            text, deltas = reader.feed(chunk.text)
            if chunk.finish_reason is not None:
                deltas += reader.finish()
            yield _as_calls(chunk, reader, text, deltas)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _as_calls(
    chunk: EngineChunk, reader: calls.CallReader, text: str, deltas: list[ToolCallDelta]
) -> EngineChunk:
    finish = chunk.finish_reason
    if finish == "stop" and reader.calls:
        finish = "tool_calls"
    # Log probabilities travel with text; calls carry none (as on Azure).
    scored = chunk.logprobs if not reader.is_call else ()
    return replace(
        chunk, text=text, tool_calls=tuple(deltas), finish_reason=finish, logprobs=scored
    )


@dataclass(frozen=True)
class _Prepared:
    """A request as the engine runs it (see :meth:`LlamaCppEngine._prepare`)."""

    request: GenerationRequest
    keep_stops: bool = True
    tools: Tools | None = None  # the functions it may call: its answers are read for calls


def _plain(
    request: GenerationRequest, messages: tuple[ChatMessage, ...], grammar: str | None
) -> GenerationRequest:
    """``request`` with text ``messages`` and its structure in ``grammar``."""
    return replace(
        request,
        messages=messages,
        tools=None,
        response_format=None,
        params=replace(request.params, grammar=grammar),
    )


class LlamaCppEngine(Engine):
    """Serves one GGUF model with llama.cpp, batching all its requests together."""

    def __init__(self, spec: ModelSpec) -> None:
        self._spec = spec
        self._model: NativeModel | None = None
        self._ctx: NativeContext | None = None
        self._scheduler: Scheduler | None = None
        self._format: PromptFormat | None = None
        self._info = ModelInfo(spec.name, spec.n_ctx, spec.default_max_tokens)
        self.gpu_layers = 0  # layers offloaded, as resolved by load()

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def ready(self) -> bool:
        return self._scheduler is not None

    @property
    def prompt_format(self) -> PromptFormat:
        """The format chat messages are rendered with (known once loaded)."""
        if self._format is None:
            raise ServiceUnavailable()
        return self._format

    def load(self) -> None:
        spec = self._spec
        layers = resolve_gpu_layers(spec.n_gpu_layers)
        logger.info("loading %s from %s", spec.name, spec.path)
        model = NativeModel(spec.path, n_gpu_layers=layers)
        self.gpu_layers = layers
        n_seq = min(spec.parallel + spec.cache_entries, 256)
        # Room for one decoding token per slot next to a prompt chunk.
        n_batch = max(spec.n_batch, spec.parallel + 64)
        config = ContextConfig(
            n_ctx=spec.n_ctx * spec.parallel,
            n_batch=n_batch,
            n_seq_max=n_seq,
            n_threads=spec.n_threads,
            # llama.cpp reserves logits for at least n_seq_max rows; the extra rows give an echoed
            # prompt's log probabilities (every position's logits) room next to the slots.
            n_outputs=n_seq + _SCORE_ROWS,
            swa_full=spec.swa_full,
        )
        try:
            ctx = NativeContext(model, config)
        except EngineError:
            model.close()
            raise
        self._model, self._ctx = model, ctx
        self._info = replace(self._info, fingerprint=_fingerprint(spec))
        self._format = self._choose_format(model)
        scheduler = Scheduler(
            model,
            ctx,
            SchedulerConfig(
                slots=spec.parallel,
                n_batch=n_batch,
                queue_size=spec.queue_size,
                cache_entries=n_seq - spec.parallel,
                cache_tokens=spec.cache_tokens or spec.n_ctx,
            ),
            turns=spec.turns if layers == 0 else None,
        )
        scheduler.start()
        self._scheduler = scheduler
        logger.info(
            "loaded %s: %d slots of %d tokens, prompt format %s, %s GPU layers",
            spec.name,
            spec.parallel,
            spec.n_ctx,
            self._format.name,
            "all" if layers == ALL_LAYERS else layers,
        )

    def _choose_format(self, model: NativeModel) -> PromptFormat:
        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            return BASE_FORMATS[self._spec.base_format]()
        return TemplateFormat(template, bos_token=model.bos_text, eos_token=model.eos_text)

    # -- prompts ------------------------------------------------------------------------------

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> PromptPlan:
        """Render and tokenize ``messages`` (thread-safe).

        Anchors are the token counts where the first message and the message before the last one
        end: other requests are likely to share exactly that much (a system prompt, a chat's
        history), so the scheduler caches the KV there.
        """
        model = self._require_model()
        rendered = self.prompt_format.render(messages)
        tokens = self._tokenize(model, rendered.text)
        ends = _content_ends(messages, rendered.text)
        heads = {i for i in (0, len(messages) - 2) if 0 <= i < len(messages) - 1 and ends[i]}
        anchors = {self._anchor(model, rendered.text[: ends[i]], tokens) for i in heads} - {0}
        return PromptPlan(tokens, rendered.stop, tuple(sorted(anchors)))

    def tokenize_raw(self, prompt: str | tuple[int, ...], suffix: str | None = None) -> PromptPlan:
        """A completions prompt as it is: text tokenized, or token ids checked (thread-safe).

        The model's BOS token is put first when its tokenizer adds one and the prompt lacks it
        (a model like Gemma answers noise without it); an empty prompt is the start of a document.
        With a ``suffix`` the prompt is laid out for fill-in-the-middle with the model's FIM
        tokens, prefix-suffix-middle as llama.cpp's infill does; a model without them gets a 400.
        """
        model = self._require_model()
        if isinstance(prompt, str):
            tokens = self._tokenize(model, prompt)
        else:
            _check_ids(prompt, model.n_vocab)
            tokens = list(prompt)
            if model.add_bos and model.bos >= 0 and tokens[:1] != [model.bos]:
                tokens.insert(0, model.bos)
        if suffix is not None:
            tokens = self._infill(model, tokens, suffix)
        if not tokens:
            if model.bos < 0:
                raise InvalidRequest("The prompt is empty.", param="prompt")
            tokens = [model.bos]
        return PromptPlan(tokens, (), ())

    def _infill(self, model: NativeModel, tokens: list[int], suffix: str) -> list[int]:
        if model.fim is None:
            raise InvalidRequest(
                "The 'suffix' parameter is not supported by this deployment's model: it has no "
                "fill-in-the-middle tokens.",
                param="suffix",
                code="unsupported_parameter",
            )
        pre, suf, mid = model.fim
        head = tokens[:1] if tokens[:1] == [model.bos] else []
        after = model.tokenize(suffix, add_bos=False)
        return [*head, pre, *tokens[len(head) :], suf, *after, mid]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (control tokens render as nothing)."""
        model = self._require_model()
        return b"".join(model.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _tokenize(self, model: NativeModel, text: str) -> list[int]:
        bos = model.bos_text
        add_bos = model.add_bos and not (bos and text.startswith(bos))
        return model.tokenize(text, add_bos=add_bos)

    def _anchor(self, model: NativeModel, head: str, tokens: list[int]) -> int:
        """Tokens of ``head`` when they are an exact prefix of ``tokens``, else 0."""
        head_tokens = self._tokenize(model, head)
        # The tokenizer may merge across the boundary; the token before it then still matches.
        for k in (len(head_tokens), len(head_tokens) - 1):
            if 0 < k < len(tokens) and common_prefix(head_tokens[:k], tokens) == k:
                return k
        return 0

    async def count_prompt_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """Tokens the rendered prompt for ``messages`` takes in this model."""
        plan = await asyncio.to_thread(self.tokenize_prompt, flatten(messages))
        return len(plan.tokens)

    # -- requests -----------------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest, *, admit: Admission | None = None
    ) -> Generation:
        prepared = await self._prepare(request)
        generation = await self._start(prepared, admit)
        if prepared.tools is None:
            return generation
        return _Calls(generation, allow_text=calls.allows_text(prepared.tools))

    async def _start(self, prepared: _Prepared, admit: Admission | None) -> Generation:
        request, keep = prepared.request, prepared.keep_stops
        size = self.wave_size(request.n)
        if request.n <= size:
            return await self._generate(request, admit, keep_stops=keep)
        # More choices than a wave: waves, with the seeds and indexes the choices would have had
        # in one job. The whole request is admitted once, with the first wave.
        seed = request.params.seed if request.params.seed is not None else secrets.randbits(31)
        first = await self._generate(_wave(request, 0, size, seed), admit, keep_stops=keep)
        return _Waves(self, first, request, size, seed, keep_stops=keep)

    def wave_size(self, choices: int) -> int:
        """How many of a request's ``choices`` may start together now: at most the slots, and
        with fair sharing at most ``slots // (requests in the engine + 1)`` (at least one)
        while other requests run or wait (docs/engine.md, "Fair sharing")."""
        scheduler = self._require_scheduler()
        size = min(choices, scheduler.slots)
        if not self._spec.fair_share:
            return size
        others = scheduler.requests()
        return size if others == 0 else max(1, min(size, scheduler.slots // (others + 1)))

    async def _prepare(self, request: GenerationRequest) -> _Prepared:
        """The request as this engine runs it: the conversation as text (functions described
        in the system message), ``response_format`` and calls as a grammar (400s first)."""
        if request.prompt is not None:
            return _Prepared(request)
        messages = flatten(request.messages)
        functions = calls.active(request.tools)
        if not functions:
            grammar = None
            if request.response_format is not None:
                grammar = await self._compile(request.response_format.schema, "response_format")
            elif request.params.grammar is not None:
                grammar = request.params.grammar
            return _Prepared(_plain(request, messages, grammar), keep_stops=grammar is None)
        tools = request.tools
        assert tools is not None
        if request.response_format is not None:
            raise InvalidRequest(
                "Cerulean cannot combine 'response_format' with function calling in one request; "
                "send one or the other.",
                param="response_format",
                code="unsupported_parameter",
            )
        grammar = await self._compile(
            calls.call_schema(tools), "tools", allow_text=calls.allows_text(tools)
        )
        messages = calls.with_instructions(messages, tools)
        plain = _plain(request, messages, grammar)
        return _Prepared(plain, keep_stops=calls.allows_text(tools), tools=tools)

    async def _generate(
        self,
        request: GenerationRequest,
        admit: Admission | None = None,
        *,
        keep_stops: bool = False,
    ) -> Generation:
        """Tokenize, admit, check and queue one request (``keep_stops``: the prompt format's
        stop strings still end a grammar-constrained answer, which may be text)."""
        self._require_scheduler()
        raw = request.prompt is not None
        if request.prompt is not None:
            plan = await asyncio.to_thread(self.tokenize_raw, request.prompt, request.suffix)
        else:
            plan = await asyncio.to_thread(self.tokenize_prompt, request.messages)
        if admit is not None:
            await admit(len(plan.tokens))
        params = request.params
        stops = (*plan.stops, *params.stop)
        self._check_logit_bias(params.logit_bias)
        if params.grammar is not None:
            model = self._require_model()
            problem = await asyncio.to_thread(grammar_error, model.vocab, params.grammar)
            if problem:
                raise InvalidRequest(problem, param="grammar")
            if not keep_stops:
                stops = params.stop  # the grammar decides where a JSON answer ends
        max_new = self._info.completion_budget(len(plan.tokens), params.max_tokens, raw=raw)
        echo = self._echo_text(request) if request.echo else None
        if max_new == 0 and (echo is None or params.logprobs is None):
            return _Nothing(len(plan.tokens), request.n, echo)
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        job = _job(plan, request, stops, max_new, seed, echo=echo)
        return await self._queue(job)

    async def _queue(self, job: Job) -> Generation:
        """Put ``job`` in line and wait for its slot (429 when the line is full, 503 after the
        queue timeout)."""
        scheduler = self._require_scheduler()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[EngineChunk | BaseException]] = asyncio.Queue()
        admitted: asyncio.Future[None] = loop.create_future()
        phases = request_phases()  # a later wave's times do not replace the first's
        if phases.queued is None:
            phases.queued = time.perf_counter()

        def on_admit() -> None:  # on the scheduler's thread, as the job takes its slot
            if phases.admitted is None:
                phases.admitted = time.perf_counter()
            loop.call_soon_threadsafe(_resolve, admitted)

        job.emit = lambda items: loop.call_soon_threadsafe(queue.put_nowait, items)
        job.on_admit = on_admit
        try:
            scheduler.submit(job)
        except QueueFull:
            raise ServerBusy(retry_after=_RETRY_AFTER_S) from None
        # A batch line waits as long as online work keeps the slots (its job has no deadline).
        timeout = None if job.batch else self._spec.queue_timeout
        try:
            await asyncio.wait_for(asyncio.shield(admitted), timeout)
        except asyncio.TimeoutError:
            scheduler.cancel(job)
            raise ServiceUnavailable(retry_after=_RETRY_AFTER_S) from None
        except BaseException:
            scheduler.cancel(job)
            raise
        return _Generation(self, job, queue)

    def _echo_text(self, request: GenerationRequest) -> str:
        if isinstance(request.prompt, str):
            return request.prompt
        if request.prompt is None:
            return ""
        return self.detokenize(request.prompt)

    async def _compile(
        self, schema: Mapping[str, Any] | None, param: str, *, allow_text: bool = False
    ) -> str:
        try:
            return await asyncio.to_thread(json_grammar, schema, allow_text=allow_text)
        except ValueError as exc:
            where = "response_format" if param == "response_format" else "tools"
            raise InvalidRequest(f"Invalid schema for {where}: {exc}", param=param) from None

    def _check_logit_bias(self, biases: tuple[tuple[int, float], ...]) -> None:
        n_vocab = self._require_model().n_vocab
        for token, _ in biases:
            if not 0 <= token < n_vocab:
                raise InvalidRequest(
                    f"Invalid key in 'logit_bias': {token}. Token ids must be between 0 and "
                    f"{n_vocab - 1} for this deployment's tokenizer.",
                    param="logit_bias",
                )

    def cancel(self, job: Job) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel(job)

    def stats(self) -> dict[str, int]:
        if self._scheduler is None:
            return {}
        return asdict(self._scheduler.stats())

    def _require_model(self) -> NativeModel:
        if self._model is None:
            raise ServiceUnavailable()
        return self._model

    def _require_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise ServiceUnavailable()
        return self._scheduler

    async def aclose(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None


def _check_ids(tokens: Sequence[int], n_vocab: int) -> None:
    for token in tokens:
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"Invalid token id in 'prompt': {token}. Token ids must be between 0 and "
                f"{n_vocab - 1} for this deployment's tokenizer.",
                param="prompt",
            )


def _fingerprint(spec: ModelSpec) -> str:
    """``fp_`` + a digest of what decides the numbers: the weights file, llama.cpp's version,
    and the settings that change how prompts are batched and cached."""
    import llama_cpp

    stat = spec.path.stat()
    parts = (
        spec.path.name,
        stat.st_size,
        int(stat.st_mtime),
        llama_cpp.__version__,
        spec.n_ctx,
        spec.parallel,
        spec.n_batch,
        spec.swa_full,
    )
    return "fp_" + hashlib.sha256(repr(parts).encode()).hexdigest()[:10]


def _job(
    plan: PromptPlan,
    request: GenerationRequest,
    stops: tuple[str, ...],
    max_new: int,
    seed: int,
    *,
    echo: str | None,
) -> Job:
    """The scheduler's job for one request (its callbacks are set when it is queued)."""
    return Job(
        prompt=plan.tokens,
        params=request.params,
        max_new=max_new,
        stops=stops,
        emit=_unset,
        on_admit=_unset,
        seed=seed,
        n=request.n,
        anchors=plan.anchors,
        trim=request.prompt is None,
        echo=echo,
        batch=request.priority == "batch",
    )


def _unset(*_args: object) -> None:
    raise AssertionError("the job was not queued")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _content_ends(messages: Sequence[ChatMessage], text: str) -> list[int]:
    """Where each message's content ends in the rendered prompt (0 where it cannot be found).

    Found by searching the contents in order, so it works for any format or template that
    copies message text verbatim (possibly trimmed), whatever it puts around it.
    """
    ends: list[int] = []
    position = 0
    for message in messages:
        content = message.text.strip()
        at = text.find(content, position) if content else -1
        if at < 0:
            ends.append(0)
            continue
        position = at + len(content)
        ends.append(position)
    return ends
