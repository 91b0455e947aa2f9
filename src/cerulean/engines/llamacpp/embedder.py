"""Sentence embeddings with llama.cpp: a BERT-class GGUF in its own context with pooling.

Each request's inputs are tokenised ([CLS] … [SEP] added), checked against the model's window,
then packed into as few ``llama_encode`` calls as fit (several sequences per call, each under its
own sequence id; llama.cpp keeps their attention apart and pools each one as the GGUF's pooling
type says, mean for all-MiniLM-L6-v2). The pooled vectors are L2-normalised, as sentence-
transformers' Normalize module and OpenAI's embeddings are.

All native work runs on one dedicated worker thread, so the event loop never blocks and the
context is never used from two threads. Requests that arrive while it computes wait together and
are then packed into the same calls (a short input costs little more in a shared call than the
call's fixed cost alone: eight content-filter checks of short prompts together take less than
three alone). On the CPU each call takes its turn with the process's other llama.cpp contexts
(:mod:`.turns`).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from cerulean.engines.base import ModelInfo
from cerulean.engines.embedding import (
    EmbeddingEngine,
    EmbeddingInput,
    Embeddings,
    input_items,
)
from cerulean.engines.llamacpp.native import Batch, NativeModel, resolve_gpu_layers
from cerulean.engines.llamacpp.turns import CpuTurns, turn_of
from cerulean.errors import EngineError, InputTooLong, InvalidRequest

__all__ = ["EmbedderSpec", "LlamaCppEmbedder", "pack"]


@dataclass(frozen=True)
class EmbedderSpec:
    """What to load and how to size the embedding context."""

    name: str
    path: Path
    n_threads: int
    n_gpu_layers: int | None = None  # None: all layers when a GPU backend is present, else 0
    # Tokens one encode call carries (several inputs packed). 512, one full input: 1,024 was no
    # faster (attention spans the whole packed call, masked) and took 70 MB more buffers.
    batch_tokens: int = 512
    max_sequences: int = 64  # inputs one encode call may carry
    turns: CpuTurns | None = field(default=None, compare=False)  # see :mod:`.turns`


def pack(lengths: Sequence[int], *, tokens: int, sequences: int) -> Iterator[list[int]]:
    """Indices of inputs grouped in order so that no group exceeds ``tokens`` or ``sequences``.

    Every length must be at most ``tokens`` (the caller checks the model's window first).
    """
    group: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if group and (used + length > tokens or len(group) == sequences):
            yield group
            group, used = [], 0
        group.append(index)
        used += length
    if group:
        yield group


class _Context:
    """A llama.cpp context made for pooled embeddings (no KV cache: BERT is not causal)."""

    def __init__(self, model: NativeModel, spec: EmbedderSpec) -> None:
        params = llama_cpp.llama_context_default_params()
        # An encoder runs a whole batch in one micro-batch: llama.cpp asserts (and aborts the
        # process) unless n_ubatch covers every token of the call. n_ctx is one input's window
        # (a non-causal model's batch is not capped by it).
        params.n_ctx = model.n_ctx_train
        params.n_batch = spec.batch_tokens
        params.n_ubatch = spec.batch_tokens
        params.n_seq_max = spec.max_sequences
        params.n_threads = spec.n_threads
        params.n_threads_batch = spec.n_threads
        params.embeddings = True
        params.kv_unified = True  # there is no KV cache; this keeps n_ctx from being re-split
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # the GGUF's own
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise EngineError("llama.cpp could not create the embedding context")
        self.ptr: Any = ctx
        pooling = int(llama_cpp.llama_pooling_type(ctx))
        if pooling not in (llama_cpp.LLAMA_POOLING_TYPE_MEAN, llama_cpp.LLAMA_POOLING_TYPE_CLS):
            self.close()
            raise EngineError(f"the embedding model's pooling type {pooling} is not mean or CLS")
        self.batch = Batch(spec.batch_tokens)

    def encode(
        self, sequences: list[list[int]], n_embd: int, turns: CpuTurns | None = None
    ) -> npt.NDArray[np.float32]:
        """Pooled (not yet normalised) vectors of ``sequences``, encoded in one call."""
        batch = self.batch
        batch.clear()
        for seq, tokens in enumerate(sequences):
            for pos, token in enumerate(tokens):
                batch.add(token, pos, seq, logits=True)
        with turn_of(turns):
            rc = llama_cpp.llama_encode(self.ptr, batch.raw)
        if rc != 0:
            raise EngineError("llama.cpp could not encode the embedding batch")
        out = np.empty((len(sequences), n_embd), dtype=np.float32)
        for seq in range(len(sequences)):
            pointer = llama_cpp.llama_get_embeddings_seq(self.ptr, seq)
            if not pointer:
                raise EngineError(f"llama.cpp returned no embedding for sequence {seq}")
            out[seq] = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (n_embd,)
            )
        return out

    def close(self) -> None:
        if getattr(self, "batch", None) is not None:
            self.batch.close()
        if self.ptr:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None


class LlamaCppEmbedder(EmbeddingEngine):
    """Serves a BERT-class GGUF (mean or CLS pooling) through llama.cpp."""

    def __init__(self, spec: EmbedderSpec) -> None:
        self.spec = spec
        self._model: NativeModel | None = None
        self._ctx: _Context | None = None
        self._info = ModelInfo(spec.name, 0, None, frozenset({"embeddings"}))
        # One thread owns the context: requests queue here instead of blocking the loop.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []  # requests the worker has not taken yet
        self._draining = False
        self._turns: CpuTurns | None = None

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return self._ctx is not None

    def load(self) -> None:
        layers = resolve_gpu_layers(self.spec.n_gpu_layers)
        model = NativeModel(self.spec.path, n_gpu_layers=layers)
        try:
            window = min(model.n_ctx_train, self.spec.batch_tokens)
            dims = int(llama_cpp.llama_model_n_embd(model.ptr))
            self._ctx = self._worker.submit(_Context, model, self.spec).result()
        except BaseException:
            model.close()
            raise
        self._model = model
        self._info = ModelInfo(self.spec.name, window, None, frozenset({"embeddings"}), dims)
        self._turns = self.spec.turns if layers == 0 else None  # turns share CPU cores only

    def tokenize(self, text: str) -> list[int]:
        """``text`` in the model's vocabulary, without [CLS]/[SEP] (what token-array input is)."""
        return self._native().tokenize(text, add_bos=False)

    async def embed(self, inputs: EmbeddingInput) -> Embeddings:
        pending = _Pending(inputs)
        with self._lock:
            self._pending.append(pending)
            start, self._draining = not self._draining, True
        if start:
            self._worker.submit(self._drain)
        return await asyncio.wrap_future(pending.future)

    def _drain(self) -> None:
        """Worker thread: compute every waiting request, those that came together at once."""
        while True:
            with self._lock:
                taken, self._pending = self._pending, []
                if not taken:
                    self._draining = False
                    return
            ready = []
            for pending in taken:
                if not pending.future.set_running_or_notify_cancel():
                    continue  # its caller has gone
                try:
                    pending.sequences = self._sequences(pending.inputs)
                except BaseException as exc:  # the caller's error (a bad token, too long)
                    pending.future.set_exception(exc)
                    continue
                ready.append(pending)
            if not ready:
                continue
            try:
                vectors = self._encode([s for p in ready for s in p.sequences])
            except BaseException as exc:
                for pending in ready:
                    pending.future.set_exception(exc)
                continue
            start = 0
            for pending in ready:
                end = start + len(pending.sequences)
                tokens = sum(len(s) for s in pending.sequences)
                pending.future.set_result(Embeddings(vectors[start:end], tokens))
                start = end

    def _native(self) -> NativeModel:
        if self._model is None:
            raise EngineError("the embedding model is not loaded")
        return self._model

    def _sequence(self, index: int, item: str | Sequence[int]) -> list[int]:
        model = self._native()
        if isinstance(item, str):
            return _with_specials(model, model.tokenize(item, add_bos=False))
        for token in item:
            if not 0 <= token < model.n_vocab:
                raise InvalidRequest(
                    f"Invalid token id {token} in input[{index}]: this model's vocabulary has "
                    f"ids 0 to {model.n_vocab - 1}.",
                    param="input",
                )
        return _with_specials(model, list(item))

    def _sequences(self, inputs: EmbeddingInput) -> list[list[int]]:
        """One request's inputs as model sequences; raises for one the model cannot read."""
        sequences = [self._sequence(i, item) for i, item in enumerate(input_items(inputs))]
        window = self._info.context_length
        longest = max((len(s) for s in sequences), default=0)
        if longest > window:
            raise InputTooLong(limit=window, tokens=longest)
        return sequences

    def _encode(self, sequences: list[list[int]]) -> npt.NDArray[np.float32]:
        """The normalised vectors of ``sequences`` (of any number of requests), in order."""
        dims = int(self._info.dimensions or 0)
        vectors = np.empty((len(sequences), dims), dtype=np.float32)
        if not sequences:
            return vectors
        ctx = self._ctx
        if ctx is None:
            raise EngineError("the embedding model is not loaded")
        groups = pack(
            [len(s) for s in sequences],
            tokens=self.spec.batch_tokens,
            sequences=self.spec.max_sequences,
        )
        for group in groups:
            vectors[group] = ctx.encode([sequences[i] for i in group], dims, self._turns)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, np.float32(1e-12))
        return vectors

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._close)
        self._worker.shutdown(wait=True)

    def _close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None


@dataclass(eq=False)
class _Pending:
    """One request waiting for the worker."""

    inputs: EmbeddingInput
    future: Future[Embeddings] = field(default_factory=Future)
    sequences: list[list[int]] = field(default_factory=list)


def _with_specials(model: NativeModel, tokens: list[int]) -> list[int]:
    """[CLS] tokens [SEP], the way BERT was trained to read a sentence."""
    cls = int(llama_cpp.llama_vocab_bos(model.vocab))
    sep = int(llama_cpp.llama_vocab_sep(model.vocab))
    return [cls, *tokens, sep]
