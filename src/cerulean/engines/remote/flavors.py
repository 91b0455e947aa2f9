"""What each kind of upstream server speaks and supports: one capability profile per flavor.

Two dialects: the OpenAI one (``openai`` — any OpenAI-compatible server — and the engines that
speak it: ``llama-server``, ``vllm``, ``sglang``, ``ollama``; the URL is the API base as OpenAI
clients take it, ``http://host:port/v1``) and Azure's (``azure``, ``cerulean``; the URL is the
resource endpoint and ``model`` the deployment there). A request that needs a feature the
upstream's flavor lacks is a 400 naming the parameter and the deployment
(``docs/scaling.md``, "Capability profiles"), never a silently dropped parameter.

Sources: the engines' documented OpenAI servers (``shared/reference/scale-out.md`` §2): vLLM
takes grammars as ``structured_outputs`` (its ``guided_*`` fields were removed in v0.12),
llama-server as ``grammar`` (GBNF), SGLang as ``ebnf``; Ollama's OpenAI layer has no ``n``,
``logprobs`` or ``logit_bias``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FEATURES", "FLAVORS", "Dialect", "Flavor", "flavor"]

Dialect = Literal["openai", "azure"]
# What a request may need of its upstream; ``docs/scaling.md`` has the table per flavor.
FEATURES = (
    "tools",
    "json_object",
    "json_schema",
    "grammar",
    "logprobs",
    "n",
    "seed",
    "logit_bias",
    "completions",
    "echo",
    "suffix",
)
_ALL = frozenset(FEATURES)


def _grammar_field(name: str) -> Callable[[dict[str, Any], str], None]:
    def put(body: dict[str, Any], grammar: str) -> None:
        body[name] = grammar

    return put


def _vllm_grammar(body: dict[str, Any], grammar: str) -> None:
    body["structured_outputs"] = {"grammar": grammar}


def _no_grammar(_body: dict[str, Any], _grammar: str) -> None:
    raise AssertionError("checked by the profile before the body is built")


@dataclass(frozen=True)
class Flavor:
    """One kind of upstream: its dialect, what it supports, and where its health lives.

    ``health`` is a path on the server's root (the URL without a trailing ``/v1``) answering
    200 when the server can serve; None probes the models listing instead.
    """

    name: str
    dialect: Dialect
    supports: frozenset[str]
    health: str | None
    put_grammar: Callable[[dict[str, Any], str], None] = field(default=_no_grammar)
    # Streams end with a usage-only chunk when asked (stream_options.include_usage).
    streams_usage: bool = True


FLAVORS: dict[str, Flavor] = {
    f.name: f
    for f in (
        Flavor("openai", "openai", _ALL - {"grammar"}, None),
        Flavor("llama-server", "openai", _ALL, "/health", _grammar_field("grammar")),
        Flavor("vllm", "openai", _ALL, "/health", _vllm_grammar),
        Flavor("sglang", "openai", _ALL, "/health", _grammar_field("ebnf")),
        Flavor(
            "ollama",
            "openai",
            _ALL - {"grammar", "n", "logprobs", "logit_bias", "echo", "suffix"},
            "/",
        ),
        Flavor("azure", "azure", _ALL - {"grammar"}, None),
        Flavor("cerulean", "azure", _ALL - {"grammar"}, "/healthz"),
    )
}


def flavor(name: str) -> Flavor:
    """The profile called ``name`` (KeyError for an unknown one)."""
    return FLAVORS[name]
