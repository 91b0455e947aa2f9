"""Typed wrappers over llama-cpp-python's low-level (ctypes) API.

llama-cpp-python's high-level ``Llama`` class owns one sequence and one sampler; continuous
batching needs the layer below it — a context with many sequences in one KV cache, a
``llama_batch`` filled by hand and one sampler chain per sequence — so this module wraps exactly
those calls. Everything here runs on the engine's loop thread except :class:`NativeModel`'s
read-only helpers (tokenize, pieces, metadata), which llama.cpp allows from any thread.

Native assertions (``GGML_ASSERT``) abort the whole process, so every wrapper checks the limits
llama.cpp would assert on (batch capacity, sequence ids) before calling into it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from cerulean.errors import EngineError

__all__ = [
    "ALL_LAYERS",
    "Batch",
    "NativeContext",
    "NativeModel",
    "DECODE_INTERRUPTED",
    "amx_compiled",
    "gpu_offload_supported",
    "resolve_gpu_layers",
]

DECODE_INTERRUPTED = 2  # llama_decode's status when its abort callback said stop

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama-cpp-python routes llama.cpp's log through this logger; below ERROR it prints
            # every tensor it loads.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_ready = True


@functools.cache
def amx_compiled() -> bool:
    """Whether this llama.cpp build computes with Intel AMX (a build on a CPU that has it).

    llama.cpp 0.3.36's AMX kernels crash the process (SIGSEGV in ``ggml_backend_amx_mul_mat``)
    on the embedded Gemma's Q4_K weights, and llama.cpp uses them for any weight they support
    when a model is loaded with its extra buffer types: such a build loads models without
    those (plain CPU weights, no repacking). See docs/engine.md, "Intel AMX"."""
    _init_backend()
    info = bytes(llama_cpp.llama_print_system_info()).decode("utf-8", errors="replace")
    return "AMX_INT8 = 1" in info


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


ALL_LAYERS = 0x7FFFFFFF  # llama.cpp offloads min(this, the model's layers)


def resolve_gpu_layers(requested: int | None) -> int:
    """The layers to offload: ``None`` all when a GPU backend is present (else 0), negative all."""
    if requested is None:
        return ALL_LAYERS if gpu_offload_supported() else 0
    return ALL_LAYERS if requested < 0 else requested


class NativeModel:
    """A loaded GGUF: weights, vocabulary and metadata."""

    def __init__(self, path: Path, *, n_gpu_layers: int, vocab_only: bool = False) -> None:
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        # The CPU's extra weight layouts (AMX tiles, repacked blocks) unless the build has AMX.
        params.use_extra_bufts = not amx_compiled()
        params.vocab_only = vocab_only  # metadata and vocabulary only: no weights (fast)
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not model:
            raise EngineError(f"llama.cpp could not load {path}: is it a valid GGUF file?")
        self.ptr: Any = model
        self.vocab: Any = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.n_swa = int(llama_cpp.llama_model_n_swa(model))
        self.metadata = self._read_metadata()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))  # -1 when the model has none
        fim = (
            int(llama_cpp.llama_vocab_fim_pre(self.vocab)),
            int(llama_cpp.llama_vocab_fim_suf(self.vocab)),
            int(llama_cpp.llama_vocab_fim_mid(self.vocab)),
        )
        # Fill-in-the-middle tokens (prefix, suffix, middle), when the model has all three.
        self.fim: tuple[int, int, int] | None = fim if min(fim) >= 0 else None
        self.bos_text = self.token_text(self.bos)
        self.eos_text = self.token_text(int(llama_cpp.llama_vocab_eos(self.vocab)))
        self._pieces: dict[int, bytes] = {}
        self._shown: dict[int, tuple[str, bytes]] = {}
        self._eog: dict[int, bool] = {}

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1 << 16)
        for i in range(int(llama_cpp.llama_model_meta_count(self.ptr))):
            n = llama_cpp.llama_model_meta_key_by_index(self.ptr, i, buf, len(buf))
            if n < 0:
                continue
            key = buf.value.decode("utf-8", errors="replace")
            n = llama_cpp.llama_model_meta_val_str_by_index(self.ptr, i, buf, len(buf))
            if n < 0:
                continue
            if n >= len(buf):  # a long value (a chat template): read it again in full
                big = ctypes.create_string_buffer(n + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self.ptr, i, big, len(big))
                out[key] = big.value.decode("utf-8", errors="replace")
            else:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """Token ids of ``text``; special tokens written in the text are parsed as such."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_bos, True)
        if n < 0:  # cannot happen with one slot per byte, but never trust a size
            capacity = -n
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_bos, True
            )
        return list(tokens[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._render(token, special=False)
            self._pieces[token] = cached
        return cached

    def display(self, token: int) -> tuple[str, bytes]:
        """How a token is listed with its log probability: text and bytes.

        A token that is not whole UTF-8 is shown as ``bytes:\\xe2\\x80`` (OpenAI's spelling); a
        control token that renders as nothing is shown by name (``<eos>``).
        """
        known = self._shown.get(token)
        if known is None:
            data = self.piece(token) or self._render(token, special=True)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{byte:02x}" for byte in data)
            known = self._shown[token] = (text, data)
        return known

    def token_text(self, token: int) -> str:
        """A token's text including special tokens (``<bos>``), or '' for "no such token"."""
        if token < 0:
            return ""
        return self._render(token, special=True).decode("utf-8", errors="replace")

    def _render(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return bytes(buf.raw[: max(n, 0)])

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT and the like."""
        known = self._eog.get(token)
        if known is None:
            known = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
            self._eog[token] = known
        return known

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


@dataclass(frozen=True)
class ContextConfig:
    """How the shared multi-sequence context is sized."""

    n_ctx: int  # KV cells in all (every slot's context together)
    n_batch: int  # most tokens one decode call may carry
    n_seq_max: int  # sequence ids 0..n_seq_max-1 (slots and cached prefixes)
    n_threads: int
    n_outputs: int  # most sequences sampled in one step (sizes the logits buffer)
    swa_full: bool = False


class NativeContext:
    """A llama.cpp context whose one (unified) KV cache holds many sequences.

    With a unified cache, copying a prefix from one sequence to another only tags the same cells
    with a second sequence id: a shared system prompt is stored and computed once.
    """

    def __init__(self, model: NativeModel, config: ContextConfig) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_batch, 512)
        params.n_seq_max = config.n_seq_max
        # Logits are read for at most one token per sequence; the default (n_batch rows of the
        # vocabulary) would cost 512 MiB for Gemma's 262k-token vocabulary.
        params.n_outputs_max = config.n_outputs
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        params.kv_unified = True
        params.swa_full = config.swa_full
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise EngineError(
                f"llama.cpp could not create a context of {config.n_ctx} tokens; "
                "lower --n-ctx or --parallel"
            )
        self.ptr: Any = ctx
        self.config = config
        self.memory: Any = llama_cpp.llama_get_memory(ctx)
        self._interrupt = _Interrupt.install(ctx)

    @property
    def interruptible(self) -> bool:
        """Whether :meth:`interrupt` can stop a running decode (see :class:`_Interrupt`)."""
        return self._interrupt is not None

    def interrupt(self, stop: bool = True) -> None:
        """Ask the running (or next) decode to stop between two graph nodes (any thread);
        ``stop=False`` withdraws the request. The decode then returns
        :data:`DECODE_INTERRUPTED` and llama.cpp forgets the positions it was computing."""
        if self._interrupt is not None:
            self._interrupt.set(stop)

    def decode(self, batch: Batch) -> int:
        """Run the model over ``batch``; 0 on success, 1 when the KV cache has no room,
        :data:`DECODE_INTERRUPTED` when :meth:`interrupt` stopped it."""
        if batch.n_tokens == 0:
            return 0
        return int(llama_cpp.llama_decode(self.ptr, batch.raw))

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        """Forget positions [p0, p1) of ``seq`` (all of it by default)."""
        self._check_seq(seq)
        llama_cpp.llama_memory_seq_rm(self.memory, seq, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        """Give ``dst`` the cells of ``src`` at positions [p0, p1) (shared, not copied)."""
        self._check_seq(src)
        self._check_seq(dst)
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, p0, p1)

    def seq_pos_min(self, seq: int) -> int:
        """The smallest position ``seq`` still has cells for (-1 when empty)."""
        self._check_seq(seq)
        return int(llama_cpp.llama_memory_seq_pos_min(self.memory, seq))

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.config.n_seq_max:
            raise EngineError(f"sequence id {seq} out of range")

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None


class _Interrupt:
    """A one-byte flag that llama.cpp's compute thread reads after every graph node.

    llama.cpp asks its abort callback ``bool f(void *data)`` after each node (a few hundred a
    decode). A Python callback would take the GIL each time, and the event loop's thread holds
    it for milliseconds at a stretch, so the decode would crawl. The callback is instead libc's
    own ``strlen`` over a two-byte buffer ``[flag, 0]``: it returns 0 or 1, which the x86-64 and
    AArch64 calling conventions return in the register where a ``bool`` is read, and it never
    touches Python. On other machines there is no interrupt (decodes always run to the end).
    """

    _MACHINES = frozenset({"x86_64", "amd64", "aarch64", "arm64"})

    def __init__(self, ctx: Any) -> None:
        self._flag = (ctypes.c_char * 2)()
        libc = ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value or 0
        self._callback = llama_cpp.ggml_abort_callback(address)  # kept alive with the context
        llama_cpp.llama_set_abort_callback(
            ctx, self._callback, ctypes.cast(self._flag, ctypes.c_void_p)
        )

    @classmethod
    def install(cls, ctx: Any) -> _Interrupt | None:
        if platform.system() not in ("Linux", "Darwin"):
            return None
        if platform.machine().lower() not in cls._MACHINES:
            return None
        return cls(ctx)

    def set(self, stop: bool) -> None:
        self._flag[0] = b"\x01" if stop else b"\x00"


class Batch:
    """A reusable ``llama_batch`` of fixed capacity, one sequence id per token."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw: Any = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.n_tokens = 0

    def clear(self) -> None:
        self.n_tokens = 0
        self.raw.n_tokens = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n_tokens

    def add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        """Append one token; returns its index (where its logits will be)."""
        i = self.n_tokens
        if i >= self.capacity:  # llama.cpp would assert and abort the process
            raise EngineError("batch overflow")
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq
        raw.logits[i] = logits
        self.n_tokens = i + 1
        raw.n_tokens = i + 1
        return i

    def close(self) -> None:
        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None
