"""The llama.cpp embedder with the real all-MiniLM-L6-v2, converted from its package."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cerulean.engines.llamacpp.build import build_default_embedder
from cerulean.engines.llamacpp.embedder import LlamaCppEmbedder
from cerulean.engines.llamacpp.turns import CpuTurns
from cerulean.errors import InputTooLong, InvalidRequest
from cerulean.packaged.minilm import ensure_embedding_model
from cerulean.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

FOX = "The quick brown fox jumps over the lazy dog."
FOX_AGAIN = "A fast auburn fox leaps above a sleepy hound."
REVENUE = "Quarterly revenue grew by twelve percent."
# sentence-transformers 6.2 (torch 2.13, CPU) on the same package: FOX's vector at dimensions
# 0, 1, 2, 3, 100, 200 and 383, and the cosines FOX·FOX_AGAIN and FOX·REVENUE.
REFERENCE = {0: 0.04393, 1: 0.05893, 2: 0.04818, 3: 0.07755, 100: 0.01311, 200: 0.03579}
REFERENCE[383] = 0.10206
REFERENCE_COSINES = (0.69959, 0.04212)
# Its tokenizer's ids for an accented sentence ([CLS] ... [SEP] stripped).
CAFE = "Café owners in Zürich raised prices again."
CAFE_IDS = [7668, 5608, 1999, 10204, 2992, 7597, 2153, 1012]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("embedder"))


@pytest.fixture(scope="module")
def embedder(home: Path) -> Iterator[LlamaCppEmbedder]:
    built = build_default_embedder(Settings(home=home, n_threads=2))
    assert built is not None
    engine, version = built
    assert version == "1"
    engine.load()
    yield engine
    asyncio.run(engine.aclose())


def embed(engine: LlamaCppEmbedder, inputs: list[str] | list[list[int]]) -> np.ndarray:  # type: ignore[type-arg]
    return asyncio.run(engine.embed(inputs)).vectors


def test_info(embedder: LlamaCppEmbedder) -> None:
    info = embedder.info
    assert info.name == "all-minilm-l6-v2"
    assert info.dimensions == 384 and info.context_length == 512
    assert info.capabilities == frozenset({"embeddings"})


def test_vectors_are_unit_length_384(embedder: LlamaCppEmbedder) -> None:
    vectors = embed(embedder, [FOX, "hi", REVENUE * 5])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_matches_sentence_transformers(embedder: LlamaCppEmbedder) -> None:
    fox, again, revenue = embed(embedder, [FOX, FOX_AGAIN, REVENUE])
    for dim, value in REFERENCE.items():
        assert fox[dim] == pytest.approx(value, abs=1e-3), dim
    assert float(fox @ again) == pytest.approx(REFERENCE_COSINES[0], abs=5e-3)
    assert float(fox @ revenue) == pytest.approx(REFERENCE_COSINES[1], abs=5e-3)


def test_similar_sentences_are_closer(embedder: LlamaCppEmbedder) -> None:
    fox, again, revenue = embed(embedder, [FOX, FOX_AGAIN, REVENUE])
    assert float(fox @ again) > float(fox @ revenue) + 0.3


def test_wordpiece_matches_the_reference_tokenizer(embedder: LlamaCppEmbedder) -> None:
    assert embedder.tokenize(CAFE) == CAFE_IDS  # lowercased, accents stripped, ## pieces


def test_token_array_equals_text(embedder: LlamaCppEmbedder) -> None:
    ids = embedder.tokenize(FOX)
    from_text = embed(embedder, [FOX])
    from_ids = embed(embedder, [ids])
    assert np.allclose(from_text, from_ids, atol=1e-6)
    usage = asyncio.run(embedder.embed([ids])).prompt_tokens
    assert usage == len(ids) + 2  # [CLS] and [SEP]


def test_batched_equals_alone(embedder: LlamaCppEmbedder) -> None:
    texts = [f"Sentence number {i} about {word}." for i, word in enumerate("abcdefghij" * 8)]
    together = embed(embedder, texts)  # 80 inputs: several packed encode calls
    alone = np.stack([embed(embedder, [t])[0] for t in texts[::16]])
    assert np.allclose(together[::16], alone, atol=1e-4)


def test_window_is_512_tokens(embedder: LlamaCppEmbedder) -> None:
    fits = " ".join(["word"] * 510)  # 510 + [CLS] + [SEP]
    assert embed(embedder, [fits]).shape == (1, 384)
    with pytest.raises(InputTooLong) as caught:
        embed(embedder, ["short", fits + " word"])
    assert "maximum context length is 512 tokens" in caught.value.message
    assert "requested 513 tokens" in caught.value.message


def test_token_ids_out_of_vocabulary(embedder: LlamaCppEmbedder) -> None:
    with pytest.raises(InvalidRequest, match="30522"):
        embed(embedder, [[1, 2], [30522]])
    with pytest.raises(InvalidRequest, match="-5"):
        embed(embedder, [[-5]])


def test_concurrent_requests_do_not_block_the_loop(embedder: LlamaCppEmbedder) -> None:
    async def main() -> tuple[int, list[int]]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(embedder.embed([FOX] * 32) for _ in range(4)))
        task.cancel()
        return ticks, [r.vectors.shape[0] for r in results]

    ticks, sizes = asyncio.run(main())
    assert sizes == [32, 32, 32, 32]
    assert ticks > 5  # the loop kept running while the worker thread encoded


def test_conversion_is_cached(home: Path) -> None:
    directory = home / "models"
    path = ensure_embedding_model(directory)
    mtime = path.stat().st_mtime_ns
    said: list[str] = []
    assert ensure_embedding_model(directory, announce=said.append) == path
    assert path.stat().st_mtime_ns == mtime and said == []
    path.with_suffix(".gguf.source").write_text("{}")  # a different source or converter
    ensure_embedding_model(directory, announce=said.append)
    assert len(said) == 1 and "converting" in said[0]


def test_disabled(home: Path) -> None:
    assert build_default_embedder(Settings(home=home, embeddings=False)) is None


def test_requests_that_wait_together_share_encode_calls(home: Path) -> None:
    """Requests queued while the worker computes are packed into the same calls; each gets its
    own vectors, and one request's bad input fails only that request."""
    turns = CpuTurns()
    built = build_default_embedder(Settings(home=home, n_threads=2), turns=turns)
    assert built is not None
    engine = built[0]
    engine.load()
    texts = [f"Request {i}: {FOX}" for i in range(12)]

    async def together() -> list[object]:
        jobs = [engine.embed([t]) for t in texts]
        jobs.insert(5, engine.embed([[30522]]))  # out of the vocabulary
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        alone = np.stack([asyncio.run(engine.embed([t])).vectors[0] for t in texts])
        before = turns.turns
        results = asyncio.run(together())
        calls = turns.turns - before
        lengths = [len(engine.tokenize(t)) + 2 for t in texts]  # with [CLS] and [SEP]
    finally:
        asyncio.run(engine.aclose())
    bad = results.pop(5)
    assert isinstance(bad, InvalidRequest)
    vectors = np.stack([r.vectors[0] for r in results])  # type: ignore[attr-defined]
    assert np.allclose(vectors, alone, atol=1e-4)
    assert [r.prompt_tokens for r in results] == lengths  # type: ignore[attr-defined]
    assert calls < len(texts)  # shared calls, not one each (each call is one CPU turn)
