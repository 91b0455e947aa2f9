"""A deterministic embedder for tests of the HTTP layer (never a default)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cerulean.engines.base import ModelInfo
from cerulean.engines.embedding import (
    EmbeddingEngine,
    EmbeddingInput,
    Embeddings,
    input_items,
)
from cerulean.errors import InputTooLong, InvalidRequest

__all__ = ["FakeEmbedder"]


class FakeEmbedder(EmbeddingEngine):
    """A word is a token, ids are 0..``vocab``-1, [CLS]/[SEP] count; vectors hash the tokens."""

    def __init__(
        self,
        *,
        name: str = "fake-embedder",
        dimensions: int = 8,
        context_length: int = 16,
        vocab: int = 1000,
    ) -> None:
        self._info = ModelInfo(name, context_length, None, frozenset({"embeddings"}), dimensions)
        self._vocab = vocab
        self._ready = False
        self.calls: list[EmbeddingInput] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return self._ready

    def load(self) -> None:
        self._ready = True

    def _tokens(self, index: int, item: str | Sequence[int]) -> list[int]:
        if isinstance(item, str):
            return [len(word) % self._vocab for word in item.split()]
        for token in item:
            if not 0 <= token < self._vocab:
                raise InvalidRequest(f"Invalid token id {token} in input[{index}]", param="input")
        return list(item)

    def _vector(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        seed = int.from_bytes(hashlib.sha256(repr(tokens).encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self._info.dimensions or 1)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    async def embed(self, inputs: EmbeddingInput) -> Embeddings:
        self.calls.append(inputs)
        sequences = [self._tokens(i, item) for i, item in enumerate(input_items(inputs))]
        longest = max(len(s) + 2 for s in sequences)
        if longest > self._info.context_length:
            raise InputTooLong(limit=self._info.context_length, tokens=longest)
        vectors = np.stack([self._vector(s) for s in sequences])
        return Embeddings(vectors, sum(len(s) + 2 for s in sequences))

    async def aclose(self) -> None:
        self._ready = False
