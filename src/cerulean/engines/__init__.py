"""Inference engines behind one interface."""

from __future__ import annotations

from cerulean.engines.base import (
    ChatMessage,
    Engine,
    EngineChunk,
    Generation,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
)

__all__ = [
    "ChatMessage",
    "Engine",
    "EngineChunk",
    "Generation",
    "GenerationRequest",
    "ModelInfo",
    "SamplingParams",
]
