"""The llama.cpp engine, over llama-cpp-python.

One dedicated worker thread owns the ``Llama`` object (it is not thread-safe) and runs one
generation at a time; the event loop only awaits a queue, so health checks, new requests and
client disconnects are handled while a generation runs. A cancelled generation is noticed at the
next token and frees the worker at once. Continuous batching replaces this single slot later.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerulean.engines.base import (
    ChatMessage,
    Engine,
    EngineChunk,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
)
from cerulean.engines.prompts import BASE_FORMATS, PromptFormat, TemplateFormat
from cerulean.engines.stops import StopMatcher
from cerulean.errors import ContextLengthExceeded, EngineError, ServiceUnavailable

__all__ = ["LlamaCppEngine", "ModelSpec"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how.

    ``base_format`` names a :data:`~cerulean.engines.prompts.BASE_FORMATS` entry used when the GGUF
    carries no chat template (or always, for a base model known to ignore its template).
    """

    name: str
    path: Path
    n_ctx: int = 4096
    n_threads: int = 1
    n_gpu_layers: int = 0
    default_max_tokens: int | None = None
    base_format: str = "transcript"


@dataclass
class _Job:
    tokens: list[int]
    params: SamplingParams
    max_new: int
    stops: tuple[str, ...]
    queue: asyncio.Queue[EngineChunk | BaseException]
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event

    def emit(self, item: EngineChunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class _LlamaGeneration(Generation):
    def __init__(self, job: _Job) -> None:
        self._job = job
        self.prompt_tokens = len(job.tokens)

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        try:
            while True:
                item = await self._job.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._job.cancel.set()

    async def aclose(self) -> None:
        self._job.cancel.set()


class LlamaCppEngine(Engine):
    """Serves one GGUF model with llama.cpp."""

    def __init__(self, spec: ModelSpec) -> None:
        self._spec = spec
        self._llm: Any = None
        self._format: PromptFormat | None = None
        self._vocab: Any = None
        self._bos_text = ""
        self._add_bos = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._loaded = threading.Event()
        self._info = ModelInfo(spec.name, spec.n_ctx, spec.default_max_tokens)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    @property
    def prompt_format(self) -> PromptFormat:
        """The format chat messages are rendered with (known once loaded)."""
        if self._format is None:
            raise ServiceUnavailable()
        return self._format

    def load(self) -> None:
        import llama_cpp

        spec = self._spec
        logger.info("loading %s from %s", spec.name, spec.path)
        try:
            llm = llama_cpp.Llama(
                model_path=str(spec.path),
                n_ctx=spec.n_ctx,
                n_threads=spec.n_threads,
                n_threads_batch=spec.n_threads,
                n_gpu_layers=spec.n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"could not load {spec.path}: {exc}") from exc
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        # Known once per model; tokenize_prompt reads them on every request.
        self._bos_text = self._token_text(llm, llm.token_bos())
        self._add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") != "false"
        self._format = self._choose_format(llm)
        self._info = ModelInfo(spec.name, llm.n_ctx(), spec.default_max_tokens)
        self._loaded.set()
        logger.info(
            "loaded %s (context %d, prompt format %s)", spec.name, llm.n_ctx(), self._format.name
        )

    def _choose_format(self, llm: Any) -> PromptFormat:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return BASE_FORMATS[self._spec.base_format]()
        return TemplateFormat(
            template,
            bos_token=self._bos_text,
            eos_token=self._token_text(llm, llm.token_eos()),
        )

    @staticmethod
    def _token_text(llm: Any, token: int) -> str:
        if token < 0:
            return ""
        return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], tuple[str, ...]]:
        """The prompt tokens for ``messages`` and the format's stop strings (thread-safe)."""
        if not self.ready:
            raise ServiceUnavailable()
        rendered = self.prompt_format.render(messages)
        bos = self._bos_text
        add_bos = self._add_bos and not (bos and rendered.text.startswith(bos))
        tokens = self._llm.tokenize(rendered.text.encode("utf-8"), add_bos=add_bos, special=True)
        return list(tokens), rendered.stop

    async def count_prompt_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        tokens, _ = await asyncio.to_thread(self.tokenize_prompt, messages)
        return len(tokens)

    async def generate(self, request: GenerationRequest) -> Generation:
        tokens, format_stops = await asyncio.to_thread(self.tokenize_prompt, request.messages)
        params = request.params
        max_new = self._budget(len(tokens), params.max_tokens)
        loop = asyncio.get_running_loop()
        job = _Job(
            tokens=tokens,
            params=params,
            max_new=max_new,
            stops=(*format_stops, *params.stop),
            queue=asyncio.Queue(),
            loop=loop,
            cancel=threading.Event(),
        )
        future = loop.run_in_executor(self._executor, self._run, job)
        future.add_done_callback(_log_worker_failure)
        return _LlamaGeneration(job)

    def _budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        limit = self._info.context_length
        if max_tokens is not None and prompt_tokens + max_tokens > limit:
            raise ContextLengthExceeded(
                limit=limit, prompt_tokens=prompt_tokens, completion_tokens=max_tokens
            )
        if prompt_tokens >= limit:
            raise ContextLengthExceeded(
                limit=limit, prompt_tokens=prompt_tokens, completion_tokens=None
            )
        cap = max_tokens if max_tokens is not None else self._info.default_max_tokens
        room = limit - prompt_tokens
        return room if cap is None else min(cap, room)

    def _run(self, job: _Job) -> None:
        if job.cancel.is_set():
            return
        try:
            self._decode(job)
        except BaseException as exc:  # handed to the awaiting request
            logger.exception("generation failed")
            job.emit(EngineError(f"generation failed: {exc}"))

    def _decode(self, job: _Job) -> None:
        import llama_cpp

        llm = self._llm
        params = job.params
        llm.set_seed(params.seed if params.seed is not None else secrets.randbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(job.stops)
        started = False
        trailing = ""  # whitespace held back: an answer does not end in blank lines
        hit_stop = False
        produced = 0
        finish: FinishReason = "length"
        tokens = llm.generate(
            job.tokens,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )
        for token in tokens:
            if job.cancel.is_set():
                logger.debug("generation cancelled after %d tokens", produced)
                return
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                finish = "stop"
                break
            produced += 1
            text = decoder.decode(bytes(llm.detokenize([token])))
            if not started:
                text = text.lstrip()
                started = bool(text)
            out, stopped = matcher.feed(text)
            body = out.rstrip()
            if body:
                job.emit(EngineChunk(text=trailing + body))
                trailing = ""
            trailing += out[len(body) :]
            if stopped:
                finish, hit_stop = "stop", True
                break
            if produced >= job.max_new:
                break
        # After a stop string, whatever was held back belongs to it; otherwise it is answer text.
        tail = (
            "" if hit_stop else matcher.feed(decoder.decode(b"", final=True))[0] + matcher.flush()
        )
        tail = (trailing + tail).rstrip()
        job.emit(
            EngineChunk(
                text=tail,
                finish_reason=finish,
                prompt_tokens=len(job.tokens),
                completion_tokens=produced,
            )
        )

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.close)


def _log_worker_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("llama worker crashed", exc_info=future.exception())
