"""Cerulean: a self-hosted Azure OpenAI Service answered by real local models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
