"""Train and measure the content filter's classifiers on the committed labelled set.

``data/content_filter/eval.jsonl`` holds mild, clearly-labelled one-line examples: one label
each, ``hate``, ``sexual``, ``violence``, ``self_harm``, ``jailbreak`` or ``none`` (benign text,
much of it sharing words with the harmful kinds: "kill a process", "shoot photos").

The harm classifier is a logistic head per category over the packaged all-MiniLM-L6-v2
embedding (one-vs-rest, L2-regularised, plain gradient descent in numpy). Its precision and
recall are **5-fold cross-validated**: each example is scored by a head trained without it, and
counted as flagged when the head's probability reaches the policy's Medium band (what the
default policy filters). The jailbreak detector is hand-written patterns, scored on the whole set
(in-sample: the patterns were written beside the examples; say so when quoting the figure).

    .venv/bin/python bench/content_filter_eval.py            # the table, from the set
    .venv/bin/python bench/content_filter_eval.py --write    # and rewrite harm_head.json

``--write`` trains the shipped head on the whole set and writes
``src/cerulean/services/filtering/harm_head.json``.

``data/content_filter/model_answers.jsonl`` is a held-out set that nothing is trained on: the
embedded Gemma's own answers to benign prompts (sampled with filtering off; short ones too, as
``max_tokens`` 3 or 4 gives). Every one of them that the Medium band would filter is a false
positive; the table's last rows count them for the shipped head and for the head trained now.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cerulean.engines.llamacpp.embedder import EmbedderSpec, LlamaCppEmbedder
from cerulean.packaged import EMBEDDING_MODEL_NAME
from cerulean.packaged.minilm import ensure_embedding_model
from cerulean.services.filtering.classifiers import HEAD_FILE, HarmHead, JailbreakDetector
from cerulean.services.filtering.policy import CATEGORIES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "content_filter" / "eval.jsonl"
HELD_OUT = ROOT / "data" / "content_filter" / "model_answers.jsonl"
BANDS = (0.3, 0.5, 0.8)  # probability for low, medium, high
FOLDS = 5


def load(path: Path = DATA) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


async def embed(texts: list[str]) -> npt.NDArray[np.float32]:
    home = Path(os.environ.get("CERULEAN_HOME", Path(tempfile.gettempdir()) / "cerulean-eval"))
    path = ensure_embedding_model(home / "models")
    embedder = LlamaCppEmbedder(EmbedderSpec(EMBEDDING_MODEL_NAME, path, n_threads=2))
    embedder.load()
    try:
        out = []
        for start in range(0, len(texts), 32):
            out.append((await embedder.embed(texts[start : start + 32])).vectors)
        return np.concatenate(out)
    finally:
        await embedder.aclose()


POSITIVE_SHARE = 0.35  # of the loss that a category's positives carry (0.5 would balance them)


def train(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float64],
    *,
    l2: float = 1e-3,
    steps: int = 3000,
    positive_share: float = POSITIVE_SHARE,
) -> tuple[npt.NDArray[np.float64], float]:
    """A logistic regression by gradient descent; the positives weighted to carry
    ``positive_share`` of the loss. Fully balanced (0.5), the head filtered 3.3 % of the 390
    held-out benign answers of the embedded model; at 0.35, 1.8 %, with about the same
    cross-validated recall (docs/content-filtering.md, "Measured precision and recall")."""
    w = np.zeros(x.shape[1])
    b = 0.0
    n = len(y)
    pos = max(y.sum(), 1.0)
    weight = np.where(y > 0, n * positive_share / pos, n * (1 - positive_share) / max(n - pos, 1.0))
    rate = 2.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = (p - y) * weight
        w -= rate * (x.T @ g / n + l2 * w)
        b -= rate * g.mean()
    return w, b


def held_out_false_positives(
    x: npt.NDArray[np.float32], head: HarmHead
) -> tuple[int, Counter[str]]:
    """How many held-out benign answers a head filters at Medium, and by which category."""
    flagged = head.probabilities(x) >= head.bands[1]
    by_category = Counter({c: int(flagged[:, j].sum()) for j, c in enumerate(head.categories)})
    return int(flagged.any(axis=1).sum()), +by_category


def held_out_answers() -> list[str]:
    """The held-out answers as the classifier reads them: stripped, "." for an empty one (each
    is shorter than one 512-character window)."""
    if not HELD_OUT.is_file():
        return []
    rows = [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line]
    return [str(row["text"]).strip() or "." for row in rows]


def folds(labels: list[str], k: int = FOLDS) -> list[int]:
    """A fold per example, stratified by label, deterministic."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        out.append(seen.get(label, 0) % k)
        seen[label] = seen.get(label, 0) + 1
    return out


def scores(tp: int, fp: int, fn: int) -> tuple[float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall


async def timing(rounds: int = 40) -> None:
    """Milliseconds per evaluation with the default policy and the shipped head: a prompt and
    completions of 100 and 400 characters (the embedding dominates)."""
    from cerulean.services.filtering.classifiers import HarmClassifier
    from cerulean.services.filtering.pipeline import ContentFilter
    from cerulean.services.filtering.policy import BUILTIN_POLICIES, DEFAULT_POLICY

    home = Path(os.environ.get("CERULEAN_HOME", Path(tempfile.gettempdir()) / "cerulean-eval"))
    path = ensure_embedding_model(home / "models")
    embedder = LlamaCppEmbedder(EmbedderSpec(EMBEDDING_MODEL_NAME, path, n_threads=2))
    embedder.load()
    try:
        harm = HarmClassifier(embedder, HarmHead.load())
        content_filter = ContentFilter(
            BUILTIN_POLICIES[DEFAULT_POLICY], {}, harm, JailbreakDetector()
        )
        cases = [
            (
                "prompt, 60 chars",
                "Prompt",
                "Write a short story about a lighthouse keeper and a storm.",
            ),
            ("completion, 100 chars", "Completion", "The lighthouse stood tall. " * 4),
            ("completion, 400 chars", "Completion", "The lighthouse stood tall. " * 15),
        ]
        print("| evaluation | ms (median of 40) |\n|---|---|")
        for label, side, text in cases:
            await content_filter.evaluate(text, side)  # type: ignore[arg-type]
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                await content_filter.evaluate(text, side)  # type: ignore[arg-type]
                times.append(time.perf_counter() - started)
            print(f"| {label} | {1000 * statistics.median(times):.1f} |")
    finally:
        await embedder.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the shipped head")
    parser.add_argument(
        "--timing", action="store_true", help="only time one evaluation (prompt, completion)"
    )
    args = parser.parse_args()
    if args.timing:
        asyncio.run(timing())
        return
    texts, labels = load()
    answers = held_out_answers()
    # One embedder load for both sets.
    vectors = asyncio.run(embed(texts + answers))
    x, held = vectors[: len(texts)], vectors[len(texts) :]
    fold = np.asarray(folds(labels))
    print(
        f"{len(texts)} examples: "
        + ", ".join(f"{c} {labels.count(c)}" for c in sorted(set(labels)))
    )
    print("\n| category | classifier | precision | recall | support | evaluation |")
    print("|---|---|---|---|---|---|")
    weights, biases = [], []
    for category in CATEGORIES:
        y = np.asarray([1.0 if label == category else 0.0 for label in labels])
        predicted = np.zeros(len(y), dtype=bool)
        for k in range(FOLDS):
            w, b = train(x[fold != k], y[fold != k])
            p = 1.0 / (1.0 + np.exp(-(x[fold == k] @ w + b)))
            predicted[fold == k] = p >= BANDS[1]
        truth = y > 0
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        precision, recall = scores(tp, fp, fn)
        print(
            f"| {category} | embedding + logistic head | {precision:.2f} | {recall:.2f} | "
            f"{int(truth.sum())} | {FOLDS}-fold cross-validated, filtered at Medium |"
        )
        w, b = train(x, y)
        weights.append(w.tolist())
        biases.append(b)
    shield = JailbreakDetector()
    detected = np.asarray([shield.detect(t) for t in texts])
    truth = np.asarray([label == "jailbreak" for label in labels])
    precision, recall = scores(
        int((detected & truth).sum()),
        int((detected & ~truth).sum()),
        int((~detected & truth).sum()),
    )
    print(
        f"| jailbreak | weighted patterns | {precision:.2f} | {recall:.2f} | {int(truth.sum())} | "
        "whole set, in-sample (patterns written beside the set) |"
    )
    if answers:
        print(f"\nheld out: {len(answers)} benign answers of the embedded model")
        print("\n| head | filtered at Medium | by category |\n|---|---|---|")
        trained = HarmHead(
            categories=tuple(CATEGORIES),
            weights=np.asarray(weights, dtype=np.float32),
            bias=np.asarray(biases, dtype=np.float32),
            bands=BANDS,
            embedding_model=EMBEDDING_MODEL_NAME,
        )
        for name, head in (("shipped (harm_head.json)", HarmHead.load()), ("trained now", trained)):
            count, by = held_out_false_positives(held, head)
            detail = ", ".join(f"{c} {n}" for c, n in sorted(by.items())) or "-"
            share = f"{count}/{len(answers)} ({100 * count / len(answers):.1f} %)"
            print(f"| {name} | {share} | {detail} |")
    if args.write:
        head = {
            "categories": list(CATEGORIES),
            "embedding_model": EMBEDDING_MODEL_NAME,
            "bands": list(BANDS),
            "weights": [[round(v, 6) for v in row] for row in weights],
            "bias": [round(v, 6) for v in biases],
            "trained_on": str(DATA.relative_to(ROOT)),
        }
        HEAD_FILE.write_text(json.dumps(head) + "\n")
        print(f"\nwrote {HEAD_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
