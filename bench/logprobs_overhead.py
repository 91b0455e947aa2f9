"""What log probabilities cost per token, and what the no-logprobs path pays for them (nothing
measurable).

Two measurements, both with this checkout:

1. The per-token Python bookkeeping the decode loop gained (the text assembler's position
   counters, the release of pending logprobs, the "asked for logprobs?" check), timed against
   the assembler of a base commit (``--base``, read with ``git show``) on the same token stream.
2. The log-softmax of one position over Gemma's 262,144 logits, with 0, 5 and 20 alternatives.
3. Greedy generation with the embedded model: seconds per token without logprobs, and with
   ``logprobs`` 0, 5 and 20 (a log-softmax over Gemma's 262,144 logits per token).

    PYTHONPATH=src .venv/bin/python bench/logprobs_overhead.py [--base 0c79ecc] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time, in a small village by the sea,"


def _old_assembler(base: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{base}:src/cerulean/engines/llamacpp/text.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_text.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_text", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TextAssembler


def _bookkeeping(base: str, rounds: int = 7, tokens: int = 20000) -> dict[str, float]:
    from cerulean.engines.base import EngineChunk, SamplingParams
    from cerulean.engines.llamacpp.jobs import Choice
    from cerulean.engines.llamacpp.text import TextAssembler

    pieces = [w.encode() for w in (" the", " sea", ",", " and", "\n", " a", " boat")] * (
        tokens // 7
    )
    params = SamplingParams()
    old_cls = _old_assembler(base)

    def old() -> None:
        text = old_cls(("\nUser:",))
        for piece in pieces:
            out, _ = text.feed(piece)
            if out:
                EngineChunk(text=out, index=0)

    def new() -> None:
        choice = Choice(0, 0, None, TextAssembler(("\nUser:",)), n_kv=0)  # type: ignore[arg-type]
        for piece in pieces:
            if params.logprobs is not None:
                raise AssertionError
            out, _ = choice.text.feed(piece)
            if out:
                EngineChunk(text=out, index=0, logprobs=choice.release())

    timings: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, run in (("before", old), ("after", new)):
            start = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - start) / len(pieces) * 1e6)
    return {name: min(values) for name, values in timings.items()}


def _softmax(vocab: int = 262144, rounds: int = 50) -> dict[int, float]:
    import numpy as np

    from cerulean.engines.llamacpp.logprobs import log_softmax_at

    logits = np.random.default_rng(0).normal(0, 4, vocab).astype(np.float32)
    out: dict[int, float] = {}
    for k in (0, 5, 20):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            log_softmax_at(logits, 7, k)
            times.append((time.perf_counter() - start) * 1e3)
        out[k] = min(times)
    return out


def _generation(tokens: int) -> dict[str, float]:
    from cerulean.engines.base import GenerationRequest, SamplingParams
    from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec
    from cerulean.packaged.gemma import ensure_embedded_model

    path = ensure_embedded_model(Path("~/.cerulean/models").expanduser(), progress=False)
    engine = LlamaCppEngine(ModelSpec("gemma-3-270m", path, n_ctx=512, n_threads=2, parallel=1))
    engine.load()

    async def one(logprobs: int | None) -> float:
        params = SamplingParams(temperature=0, max_tokens=tokens, logprobs=logprobs)
        request = GenerationRequest((), params, prompt=PROMPT)
        start = time.perf_counter()
        produced = 0
        async for chunk in await engine.generate(request):
            produced = chunk.completion_tokens or produced
        return (time.perf_counter() - start) / max(produced, 1) * 1e3

    results: dict[str, list[float]] = {}
    try:
        for _ in range(3):  # interleaved, so load on the machine hits every variant alike
            for logprobs in (None, 0, 5, 20):
                key = "none" if logprobs is None else f"logprobs={logprobs}"
                results.setdefault(key, []).append(asyncio.run(one(logprobs)))
    finally:
        asyncio.run(engine.aclose())
    return {key: min(values) for key, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="0c79ecc", help="commit whose assembler is 'before'")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    book = _bookkeeping(args.base)
    print("per-token bookkeeping, no logprobs (µs, best of 7 × 20k tokens):")
    print(f"  before ({args.base}): {book['before']:.3f}   after: {book['after']:.3f}")
    print("log-softmax of one position, 262,144 logits (ms, best of 50):")
    for k, value in _softmax().items():
        print(f"  k={k:<3d} {value:.2f}")
    gen = _generation(args.tokens)
    base = gen["none"]
    print(f"greedy generation, {args.tokens} tokens, 1 slot (ms per token, best of 3):")
    for key, value in gen.items():
        print(f"  {key:12s} {value:7.2f}   ({value / base:.2f}× no logprobs)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
