"""The embedding-engine interface: what the embeddings service may ask of a backend.

Like :class:`~cerulean.engines.base.Engine`, an embedder never sees wire models: the service
hands it plain strings or token-id lists and gets back one unit-length vector per input.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cerulean.engines.base import ModelInfo

__all__ = ["EmbeddingEngine", "EmbeddingInput", "Embeddings", "input_items"]

# Texts, or token-id lists of the model's own vocabulary (no [CLS]/[SEP]: the engine adds them).
EmbeddingInput = list[str] | list[list[int]]


def input_items(inputs: EmbeddingInput) -> list[str | list[int]]:
    """``inputs`` item by item (each a text or a token-id list), for a typed loop."""
    return list(inputs)


@dataclass(frozen=True)
class Embeddings:
    """One row per input, in input order, each of L2 norm 1; and the tokens the model ran."""

    vectors: npt.NDArray[np.float32]
    prompt_tokens: int


class EmbeddingEngine(abc.ABC):
    """A backend serving one sentence-embedding model."""

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """The model: name, context length (tokens per input), ``dimensions``, capabilities."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether :meth:`load` has finished and requests can be served."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model; blocking, called off the event loop."""

    @abc.abstractmethod
    async def embed(self, inputs: EmbeddingInput) -> Embeddings:
        """Embed ``inputs`` without blocking the event loop.

        Raises :class:`~cerulean.errors.InvalidRequest` (before any work) for an input longer
        than the model's context or a token id outside its vocabulary.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop work and release the model."""
