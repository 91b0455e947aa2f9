"""Inference engines behind one interface (:mod:`cerulean.engines.base`).

- :mod:`cerulean.engines.llamacpp`: models run in this process by llama.cpp, with continuous
  batching; function calling and structured output by grammar.
- :mod:`cerulean.engines.fake` and :mod:`cerulean.engines.fake_embeddings`: deterministic
  stand-ins for tests of the HTTP layer (never a default).
"""
