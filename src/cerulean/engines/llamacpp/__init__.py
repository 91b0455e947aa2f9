"""The llama.cpp engine (continuous batching over llama-cpp-python's low-level API)."""

from cerulean.engines.llamacpp.engine import LlamaCppEngine, ModelSpec, PromptPlan

__all__ = ["LlamaCppEngine", "ModelSpec", "PromptPlan"]
