"""Measure how the embedded base model answers under each candidate prompt format.

The embedded Gemma 3 270M GGUF is a *base* model and carries no chat template, so Cerulean must
pick a prompt format and stop strings for it. For each format in
``cerulean.engines.llamacpp.prompts.BASE_FORMATS`` this script runs a fixed set of chats through
the real engine (greedy by default, 256-token cap, fixed seed) and reports how often the answer ends
by itself (``stop``) rather than at the cap (``length``), the mean completion length, and the
answers themselves.

    .venv/bin/python bench/prompt_formats.py [--temperature 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from cerulean.engines.base import ChatMessage, GenerationRequest, SamplingParams
from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec
from cerulean.engines.llamacpp.prompts import BASE_FORMATS
from cerulean.packaged.gemma import ensure_embedded_model

SYSTEM = "You are a helpful assistant."
CHATS: list[list[tuple[str, str]]] = [
    [  # Microsoft's quickstart conversation
        ("system", "You are a helpful assistant."),
        ("user", "Does Azure OpenAI support customer managed keys?"),
        ("assistant", "Yes, customer managed keys are supported by Azure OpenAI."),
        ("user", "Do other Azure AI services support this too?"),
    ],
    [("system", SYSTEM), ("user", "What is the capital of France?")],
    [("system", SYSTEM), ("user", "Name three primary colors.")],
    [("system", SYSTEM), ("user", "Write one sentence about the sea.")],
    [("system", SYSTEM), ("user", "How many legs does a spider have?")],
    [("system", SYSTEM), ("user", "Say hello.")],
    [("user", "What is 2 + 2?")],
    [("system", SYSTEM), ("user", "Translate 'good morning' into Spanish.")],
]


async def run_format(path: Path, fmt: str, cap: int, temperature: float) -> dict[str, object]:
    engine = LlamaCppEngine(ModelSpec("gemma-3-270m", path, 4096, 2, 0, cap, fmt))
    engine.load()
    rows = []
    for chat in CHATS:
        messages = tuple(ChatMessage(role, text) for role, text in chat)
        started = time.perf_counter()
        generation = await engine.generate(
            GenerationRequest(messages, SamplingParams(temperature=temperature, seed=1234))
        )
        text, finish, tokens = "", None, 0
        async for chunk in generation:
            text += chunk.text
            if chunk.finish_reason:
                finish, tokens = chunk.finish_reason, chunk.completion_tokens
        rows.append(
            {
                "question": chat[-1][1],
                "answer": text,
                "finish_reason": finish,
                "completion_tokens": tokens,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    await engine.aclose()
    stops = sum(1 for r in rows if r["finish_reason"] == "stop")
    return {
        "format": fmt,
        "stopped_by_itself": f"{stops}/{len(rows)}",
        "mean_completion_tokens": statistics.mean(int(r["completion_tokens"]) for r in rows),  # type: ignore[call-overload]
        "empty_answers": sum(1 for r in rows if not str(r["answer"]).strip()),
        "rows": rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cap", type=int, default=256, help="generation cap (tokens)")
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 is greedy; 1 is the API's default"
    )
    parser.add_argument("--home", type=Path, default=Path("~/.cerulean").expanduser())
    args = parser.parse_args()
    path = ensure_embedded_model(args.home / "models", progress=False)
    results = [await run_format(path, fmt, args.cap, args.temperature) for fmt in BASE_FORMATS]
    for result in results:
        print(
            f"\n=== {result['format']}: stopped by itself {result['stopped_by_itself']}, "
            f"mean completion tokens {result['mean_completion_tokens']:.1f}, "
            f"empty answers {result['empty_answers']}"
        )
        for row in result["rows"]:  # type: ignore[attr-defined]
            answer = str(row["answer"]).replace("\n", "\\n")
            print(
                f"  [{row['finish_reason']:6} {row['completion_tokens']:3} tok] "
                f"{row['question'][:40]!r:44} -> {answer[:150]!r}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
