"""``response_format`` with the real model: every answer that stops by itself parses and
validates (issue 10, defect 3: strings never hold raw control characters).

The converter that turns a JSON schema into a grammar admits U+0000–U+001F inside strings;
:mod:`cerulean.engines.llamacpp.grammars` narrows its string rules. A property test draws random
schemas and seeds; a second test pushes the model towards newlines with ``logit_bias`` and shows
that, without the repair, the same requests give JSON that does not parse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cerulean.engines.base import ChatMessage, GenerationRequest, ResponseFormat, SamplingParams
from cerulean.engines.llamacpp import LlamaCppEngine, grammars
from cerulean.packaged.gemma import ensure_embedded_model
from tests.engines.llamacpp.test_batching import make_engine

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

ASK = (
    ChatMessage("system", "You answer in JSON only."),
    ChatMessage(
        "user",
        "Describe your favourite city in JSON. Put a short poem, with line breaks, in the text.",
    ),
)
NAMES = st.sampled_from(["note", "title", "lines", "count", "ok", "tags", "score", "city"])
LEAVES = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "maxLength": 40},
        {"type": "string", "pattern": "^[A-Za-z .]+$"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "string", "enum": ["red", "green", "blue"]},
    ]
)


def _object(properties: dict[str, Any], required: int) -> dict[str, Any]:
    names = sorted(properties)
    return {
        "type": "object",
        "properties": properties,
        "required": names[:required],
        "additionalProperties": False,
    }


def _containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    arrays = children.map(lambda item: {"type": "array", "items": item, "maxItems": 3})
    objects = st.builds(
        _object, st.dictionaries(NAMES, children, min_size=1, max_size=3), st.integers(0, 3)
    )
    return arrays | objects


SCHEMAS = st.builds(
    _object,
    st.dictionaries(NAMES, st.recursive(LEAVES, _containers, max_leaves=4), min_size=1, max_size=3),
    st.integers(1, 3),
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    path = ensure_embedded_model(Path(tmp_path_factory.mktemp("models")), progress=False)
    built = make_engine(path, parallel=8, n_ctx=1024, queue_timeout=600.0)
    yield built
    asyncio.run(built.aclose())


async def _answers(
    engine: LlamaCppEngine, schema: dict[str, Any], n: int, **params: Any
) -> list[tuple[str, str]]:
    """(text, finish reason) of ``n`` sampled answers under ``schema``."""
    request = GenerationRequest(
        ASK,
        SamplingParams(**params),
        n=n,
        response_format=ResponseFormat("json_schema", schema),
    )
    texts = [""] * n
    finishes = [""] * n
    async for chunk in await engine.generate(request):
        texts[chunk.index] += chunk.text
        if chunk.finish_reason is not None:
            finishes[chunk.index] = chunk.finish_reason
    return list(zip(texts, finishes, strict=True))


stopped: list[int] = []


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=SCHEMAS, seed=st.integers(0, 2**31 - 1))
def test_every_stopped_answer_parses_and_validates(
    engine: LlamaCppEngine, schema: dict[str, Any], seed: int
) -> None:
    answers = asyncio.run(_answers(engine, schema, 2, temperature=1.0, max_tokens=96, seed=seed))
    for text, finish in answers:
        if finish == "stop":
            stopped.append(1)
            jsonschema.validate(json.loads(text), schema)


def test_the_property_test_saw_answers_that_stopped() -> None:
    """The property holds only for answers that end by themselves: enough of them must have."""
    assert len(stopped) >= 6, len(stopped)


NOTE = _object({"note": {"type": "string"}, "count": {"type": "integer"}}, 2)


def _newline_bias(engine: LlamaCppEngine) -> tuple[tuple[int, float], ...]:
    model = engine._require_model()  # the engine's own tokenizer
    tokens = {t for text in ("\n", "\n\n", "\t") for t in model.tokenize(text, add_bos=False)}
    return tuple((token, 6.0) for token in sorted(tokens))


def _pushed(engine: LlamaCppEngine) -> list[tuple[str, str]]:
    bias = _newline_bias(engine)
    return asyncio.run(
        _answers(engine, NOTE, 6, temperature=0.7, max_tokens=64, seed=11, logit_bias=bias)
    )


def test_newlines_pushed_by_logit_bias_stay_escaped(engine: LlamaCppEngine) -> None:
    answers = _pushed(engine)
    parsed = [json.loads(text) for text, finish in answers if finish == "stop"]
    assert parsed, answers
    for value in parsed:
        jsonschema.validate(value, NOTE)


def test_without_the_repair_the_same_requests_break(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter's own string rule lets the pushed newlines in raw: the answers stop but do
    not parse. (This is what the repair fixes; the test fails if the model stops doing it.)"""
    monkeypatch.setattr(grammars, "strings_without_controls", lambda grammar: grammar)
    answers = _pushed(engine)
    broken = 0
    for text, finish in answers:
        if finish != "stop":
            continue
        try:
            json.loads(text)
        except json.JSONDecodeError:
            broken += 1
    assert broken >= 1, answers
