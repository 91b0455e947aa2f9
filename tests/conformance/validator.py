"""Validate Cerulean's response bodies against the vendored Azure OpenAI specs.

Schemas are chosen by (api-version → spec file, route, status, stream or not):

================  ============================  ==========================================
route             JSON body (2xx)               each SSE ``data:`` event (2xx stream)
================  ============================  ==========================================
chat/completions  createChatCompletionResponse  createChatCompletionStreamResponse
completions       createCompletionResponse      the same, ``finish_reason`` nullable
embeddings        the inline 200 schema         (no streaming)
any, non-2xx      errorResponse                 errorResponse (an ``error`` event)
================  ============================  ==========================================

api-versions up to 2023-05-15 use ``specs/2023-05-15-inference.json`` (its chat streams, which that
file does not describe, use the 2024-10-21 chunk schema); every later version, and the
``/openai/v1/`` routes, use ``specs/2024-10-21-inference.json``, the newest stable file.

Library: ``openapi-schema-validator``'s ``OAS30Validator`` (built on ``jsonschema``, references
resolved by ``referencing``), because both files are OpenAPI 3.0, whose ``nullable`` keyword plain
JSON Schema validators ignore (they would reject every ``"content": null``). Where Azure really
differs from the files, :mod:`tests.conformance.deviations` patches an in-memory copy.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
from openapi_schema_validator import OAS30Validator, OAS31Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4, DRAFT202012

from tests.conformance.deviations import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    NEW,
    OK_JSON,
    OLD,
    OPENAI,
    apply_all,
    apply_openai,
    urn,
)

__all__ = [
    "Conformance",
    "Exchange",
    "Violation",
    "conformance",
    "load_specs",
    "raw_spec",
    "report",
    "spec_for",
]

SPEC_DIR = Path(__file__).parent / "specs"
SPEC_FILES = {
    NEW: SPEC_DIR / "2024-10-21-inference.json",
    OLD: SPEC_DIR / "2023-05-15-inference.json",
    OPENAI: SPEC_DIR / "openai-openapi-2.3.0.json",  # OpenAPI 3.1: the Responses API
}

_ROUTES = (
    ("chat", re.compile(r"^/openai/(?:deployments/[^/]+|v1)/chat/completions$")),
    ("completions", re.compile(r"^/openai/(?:deployments/[^/]+|v1)/completions$")),
    ("embeddings", re.compile(r"^/openai/(?:deployments/[^/]+|v1)/embeddings$")),
    ("responses", re.compile(r"^/openai/(?:v1/)?responses(?:/[^/]+(?:/cancel)?)?$")),
    ("response_input_items", re.compile(r"^/openai/(?:v1/)?responses/[^/]+/input_items$")),
)

# The Responses API, from OpenAI's spec whatever the api-version: (operation, method) -> schema.
_OPENAI_SCHEMAS: dict[tuple[str, str], str] = {
    ("responses", "POST"): urn(OPENAI, "/components/schemas/Response"),
    ("responses", "GET"): urn(OPENAI, "/components/schemas/Response"),
    ("responses", "DELETE"): urn("extras", "/deletedResponse"),
    ("response_input_items", "GET"): urn(OPENAI, "/components/schemas/ResponseItemList"),
}

# (spec file, operation, "json" | "chunk") -> the schema's reference
_SCHEMAS: dict[tuple[str, str, str], str] = {
    (NEW, "chat", "json"): urn(NEW, "/components/schemas/createChatCompletionResponse"),
    (NEW, "chat", "chunk"): urn(NEW, "/components/schemas/createChatCompletionStreamResponse"),
    (NEW, "completions", "json"): urn(NEW, "/components/schemas/createCompletionResponse"),
    (NEW, "completions", "chunk"): urn("extras", f"/completionStreamChunk-{NEW}"),
    (NEW, "embeddings", "json"): urn(NEW, EMBEDDINGS_PATH + OK_JSON),
    (OLD, "chat", "json"): urn(OLD, CHAT_PATH + OK_JSON),
    (OLD, "chat", "chunk"): urn(NEW, "/components/schemas/createChatCompletionStreamResponse"),
    (OLD, "completions", "json"): urn(OLD, COMPLETIONS_PATH + OK_JSON),
    (OLD, "completions", "chunk"): urn("extras", f"/completionStreamChunk-{OLD}"),
    (OLD, "embeddings", "json"): urn(OLD, EMBEDDINGS_PATH + OK_JSON),
}
# Files and Batch (Azure follows OpenAI there): (method, path pattern) -> OpenAI's schema.
_OPENAI_ROUTES = (
    ("POST", re.compile(r"^/openai/(?:v1/)?files$"), "OpenAIFile"),
    ("GET", re.compile(r"^/openai/(?:v1/)?files$"), "ListFilesResponse"),
    ("GET", re.compile(r"^/openai/(?:v1/)?files/[^/]+$"), "OpenAIFile"),
    ("DELETE", re.compile(r"^/openai/(?:v1/)?files/[^/]+$"), "DeleteFileResponse"),
    ("POST", re.compile(r"^/openai/(?:v1/)?batches$"), "Batch"),
    ("GET", re.compile(r"^/openai/(?:v1/)?batches$"), "ListBatchesResponse"),
    ("GET", re.compile(r"^/openai/(?:v1/)?batches/[^/]+$"), "Batch"),
    ("POST", re.compile(r"^/openai/(?:v1/)?batches/[^/]+/cancel$"), "Batch"),
)
OPENAI_SPEC_FILE = SPEC_DIR / "openai-openapi-2.3.0.json"
_PROMPT_FILTER_CHUNK = urn("extras", "/promptFilterChunk")
_ANNOTATION_CHUNK = urn("extras", "/annotationChunk")
_APIM_401 = urn("extras", "/apimUnauthorized")
# Statuses whose body no client ever reads: 499 is logged for a client that went away.
_UNREAD = frozenset({204, 304, 499})


def spec_for(api_version: str | None) -> str:
    """The spec file for an api-version: 2023-05-15 and older use the 2023-05-15 file."""
    if api_version and re.match(r"^\d{4}-\d{2}-\d{2}", api_version) and api_version[:10] <= OLD:
        return OLD
    return NEW


def openai_schema_for(method: str, path: str) -> str | None:
    """The OpenAI schema of a Files or Batch route's 2xx body (None: not such a route)."""
    normalised = re.sub(r"/{2,}", "/", path).rstrip("/")
    for verb, pattern, name in _OPENAI_ROUTES:
        if verb == method and pattern.match(normalised):
            return name
    return None


@cache
def load_openai_spec() -> dict[str, Any]:
    """OpenAI's spec with the Files/Batch deviations applied."""
    docs = {OPENAI: json.loads(OPENAI_SPEC_FILE.read_text(encoding="utf-8"))}
    apply_openai(docs)
    return docs[OPENAI]


def operation_for(path: str) -> str | None:
    """``chat``, ``completions``, ``embeddings`` or ``None`` for routes the specs do not cover."""
    normalised = re.sub(r"/{2,}", "/", path)
    return next((name for name, pattern in _ROUTES if pattern.match(normalised)), None)


@dataclass(frozen=True)
class Exchange:
    """One response as a client saw it."""

    method: str
    path: str
    api_version: str | None
    status: int
    content_type: str
    body: bytes
    complete: bool = True  # False when the client stopped reading a stream early
    origin: str = ""  # the test that made the request

    def describe(self) -> str:
        query = f"?api-version={self.api_version}" if self.api_version else ""
        return f"{self.method} {self.path}{query} -> {self.status} {self.content_type or '-'}"


@dataclass(frozen=True)
class Violation:
    exchange: Exchange
    where: str  # "body" or "event N"
    schema: str
    path: str
    message: str

    def __str__(self) -> str:
        at = f" at {self.path}" if self.path else ""
        return f"{self.where} vs {self.schema}{at}: {self.message}"


def report(violations: list[Violation], limit: int = 30) -> str:
    """A readable listing, grouped by the test and the exchange that produced them."""
    lines: list[str] = []
    last = None
    for violation in violations[:limit]:
        exchange = violation.exchange
        if exchange is not last:
            origin = f"{exchange.origin}: " if exchange.origin else ""
            lines.append(f"{origin}{exchange.describe()}")
            last = exchange
        lines.append(f"    {violation}")
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    return "\n".join(lines)


def raw_spec(name: str) -> dict[str, Any]:
    """A fresh copy of one vendored spec file, as published."""
    loaded: dict[str, Any] = json.loads(SPEC_FILES[name].read_text(encoding="utf-8"))
    return loaded


@cache
def load_specs() -> dict[str, dict[str, Any]]:
    """Copies of both spec files plus ``extras``, with every deviation applied."""
    docs = {name: raw_spec(name) for name in SPEC_FILES}
    docs["extras"] = {}
    apply_all(docs)
    return docs


def _registry(docs: dict[str, dict[str, Any]]) -> Registry[Any]:
    resources = [
        (f"urn:spec:{name}", (DRAFT202012 if name == OPENAI else DRAFT4).create_resource(doc))
        for name, doc in docs.items()
    ]
    return Registry().with_resources(resources)


def _short(ref: str) -> str:
    """``2024-10-21 createChatCompletionResponse``, ``2023-05-15 embeddings 200``, ..."""
    doc, _, pointer = ref.removeprefix("urn:spec:").partition("#")
    if pointer.startswith("/paths/"):
        route = pointer.split("/")[2].replace("~1", "/")
        return f"{doc} {route.rsplit('}/', 1)[-1]} 200"
    return f"{doc} {pointer.rsplit('/', 1)[-1]}"


class Conformance:
    """Checks exchanges; counts what it validated (for the session summary)."""

    def __init__(self) -> None:
        self._registry = _registry(copy.deepcopy(load_specs()))
        self._validators: dict[str, OAS30Validator] = {}
        self._openai: Registry[Any] | None = None
        self.counts: Counter[str] = Counter()

    def openai_errors(self, instance: Any, name: str) -> list[ValidationError]:
        """Validation errors of ``instance`` against OpenAI's schema ``name`` (OpenAPI 3.1,
        JSON Schema 2020-12)."""
        if self._openai is None:
            resource = DRAFT202012.create_resource(load_openai_spec())
            self._openai = Registry().with_resource(f"urn:spec:{OPENAI}", resource)
        key = f"{OPENAI}:{name}"
        validator = self._validators.get(key)
        if validator is None:
            ref = f"urn:spec:{OPENAI}#/components/schemas/{name}"
            validator = Draft202012Validator({"$ref": ref}, registry=self._openai)
            self._validators[key] = validator
        return sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))

    def errors(self, instance: Any, ref: str) -> list[ValidationError]:
        """The validation errors of ``instance`` against the schema at ``ref``."""
        validator = self._validators.get(ref)
        if validator is None:
            kind = OAS31Validator if ref.startswith(f"urn:spec:{OPENAI}#") else OAS30Validator
            validator = kind({"$ref": ref}, registry=self._registry)
            self._validators[ref] = validator
        return sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))

    def check(self, exchange: Exchange) -> list[Violation]:
        """Every violation in one exchange (empty when it conforms or has no schema)."""
        if exchange.status in _UNREAD:
            return []
        if not exchange.complete and not exchange.content_type.startswith("text/event-stream"):
            # e.g. openai 1.x closes a 429 unread before it retries: nothing to judge.
            self.counts["not validated (closed unread by the client)"] += 1
            return []
        operation = operation_for(exchange.path)
        spec = spec_for(exchange.api_version)
        if not 200 <= exchange.status < 300:
            return self._check_error(exchange, spec)
        if operation is None:
            openai_schema = openai_schema_for(exchange.method, exchange.path)
            if openai_schema is not None:
                return self._check_openai(exchange, openai_schema)
            self.counts["no schema (route outside the inference spec)"] += 1
            return []
        if (operation, exchange.method) in _OPENAI_SCHEMAS:
            if exchange.content_type.startswith("text/event-stream"):
                return self._check_response_events(exchange)
            return self._check_json(exchange, _OPENAI_SCHEMAS[(operation, exchange.method)], "body")
        if exchange.content_type.startswith("text/event-stream"):
            return self._check_stream(exchange, spec, operation)
        return self._check_json(exchange, _SCHEMAS[(spec, operation, "json")], "body")

    def _check_openai(self, exchange: Exchange, name: str) -> list[Violation]:
        if not exchange.content_type.startswith("application/json"):
            message = f"content-type {exchange.content_type!r}, expected application/json"
            return [Violation(exchange, "body", "headers", "", message)]
        body, problems = self._parse(exchange, "body", exchange.body)
        if problems:
            return problems
        label = f"{OPENAI} {name}"
        self.counts[label] += 1
        return [
            Violation(exchange, "body", label, "/".join(map(str, e.absolute_path)), e.message)
            for e in self.openai_errors(body, name)
        ]

    def _violations(
        self, exchange: Exchange, where: str, ref: str, instance: Any
    ) -> list[Violation]:
        self.counts[_short(ref)] += 1
        found: dict[str, Violation] = {}
        for error in self.errors(instance, ref):
            path = "/".join(map(str, error.absolute_path))
            # A null where none is allowed fails three keywords (nullable, type, enum): say it once.
            key = path if error.instance is None else f"{path} {error.message}"
            found.setdefault(key, Violation(exchange, where, _short(ref), path, error.message))
        return list(found.values())

    def _parse(
        self, exchange: Exchange, where: str, raw: bytes | str
    ) -> tuple[Any, list[Violation]]:
        try:
            return json.loads(raw), []
        except ValueError as exc:
            return None, [
                Violation(exchange, where, "JSON", "", f"not JSON ({exc}): {raw[:120]!r}")
            ]

    def _check_json(self, exchange: Exchange, ref: str, where: str) -> list[Violation]:
        if not exchange.content_type.startswith("application/json"):
            message = f"content-type {exchange.content_type!r}, expected application/json"
            return [Violation(exchange, where, "headers", "", message)]
        body, problems = self._parse(exchange, where, exchange.body)
        return problems or self._violations(exchange, where, ref, body)

    def _check_error(self, exchange: Exchange, spec: str) -> list[Violation]:
        ref = urn(spec, "/components/schemas/errorResponse")
        if exchange.status == 401 and exchange.body.startswith(b'{"statusCode"'):
            ref = _APIM_401
        return self._check_json(exchange, ref, "error body")

    def _check_stream(self, exchange: Exchange, spec: str, operation: str) -> list[Violation]:
        chunk_ref = _SCHEMAS.get((spec, operation, "chunk"))
        events, problems = sse_data(exchange)
        if chunk_ref is None:
            return [Violation(exchange, "body", "route", "", f"{operation} does not stream")]
        if (
            exchange.complete
            and (not events or events[-1] != "[DONE]")
            and not _ends_in_error(events)
        ):
            problems.append(Violation(exchange, "end", "SSE", "", "no final `data: [DONE]`"))
        for index, data in enumerate(events):
            where = f"event {index}"
            if data == "[DONE]":
                if index != len(events) - 1:
                    problems.append(Violation(exchange, where, "SSE", "", "events after [DONE]"))
                continue
            chunk, bad = self._parse(exchange, where, data)
            problems += bad
            if bad:
                continue
            if isinstance(chunk, dict) and "error" in chunk:
                ref = urn(spec, "/components/schemas/errorResponse")
            elif index == 0 and isinstance(chunk, dict) and chunk.get("object") == "":
                ref = _PROMPT_FILTER_CHUNK
            elif isinstance(chunk, dict) and chunk.get("object") == "":
                ref = _ANNOTATION_CHUNK
            else:
                ref = chunk_ref
            problems += self._violations(exchange, where, ref, chunk)
        return problems

    def _check_response_events(self, exchange: Exchange) -> list[Violation]:
        """A Responses API stream: ``event: <type>`` + ``data: <event>`` blocks, each event valid
        for its ``ResponseStreamEvent`` member, ``sequence_number`` strictly increasing."""
        problems: list[Violation] = []
        last = -1
        for index, (name, data) in enumerate(_named_events(exchange, problems)):
            where = f"event {index}"
            event, bad = self._parse(exchange, where, data)
            problems += bad
            if bad:
                continue
            kind = event.get("type") if isinstance(event, dict) else None
            if name is not None and name != kind:
                message = f"`event: {name}` names a {kind!r} event"
                problems.append(Violation(exchange, where, "SSE", "", message))
            ref = response_event_schemas().get(str(kind))
            if ref is None:
                problems.append(Violation(exchange, where, "type", "", f"unknown event {kind!r}"))
                continue
            problems += self._violations(exchange, where, ref, event)
            number = event.get("sequence_number")
            if isinstance(number, int) and number <= last:
                message = f"sequence_number {number} after {last}"
                problems.append(Violation(exchange, where, "order", "", message))
            last = number if isinstance(number, int) else last
        return problems


@cache
def response_event_schemas() -> dict[str, str]:
    """Each ``ResponseStreamEvent`` member's reference, by its ``type``."""
    schemas = load_specs()[OPENAI]["components"]["schemas"]
    out: dict[str, str] = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        kinds = schemas[name].get("properties", {}).get("type", {}).get("enum", [])
        for kind in kinds:
            out[kind] = urn(OPENAI, f"/components/schemas/{name}")
    return out


def _named_events(exchange: Exchange, problems: list[Violation]) -> list[tuple[str | None, str]]:
    """``(event name, data)`` of each block of an SSE body with optional ``event:`` lines."""
    text = exchange.body.decode("utf-8", errors="replace").replace("\r\n", "\n")
    out: list[tuple[str | None, str]] = []
    for index, block in enumerate(text.split("\n\n")[:-1]):
        lines = block.split("\n")
        name = lines[0][len("event: ") :] if lines[0].startswith("event: ") else None
        data = lines[1:] if name is not None else lines
        if len(data) != 1 or not data[0].startswith("data: "):
            message = f"not an `event:` + `data:` block: {block[:120]!r}"
            problems.append(Violation(exchange, f"event {index}", "SSE", "", message))
            continue
        out.append((name, data[0][len("data: ") :]))
    return out


def sse_data(exchange: Exchange) -> tuple[list[str], list[Violation]]:
    """The ``data:`` payloads of a data-only SSE body (a trailing partial event is dropped)."""
    text = exchange.body.decode("utf-8", errors="replace").replace("\r\n", "\n")
    blocks = text.split("\n\n")
    # The piece after the last blank line is empty for a complete stream, partial otherwise.
    blocks = blocks[:-1]
    events: list[str] = []
    problems: list[Violation] = []
    for index, block in enumerate(blocks):
        if not block.startswith("data: ") or "\n" in block:
            message = f"not a single `data: ` line: {block[:120]!r}"
            problems.append(Violation(exchange, f"event {index}", "SSE", "", message))
            continue
        events.append(block[len("data: ") :])
    return events, problems


@cache
def conformance() -> Conformance:
    """The process-wide checker (building validators costs a little; reuse them)."""
    return Conformance()


def _ends_in_error(events: list[str]) -> bool:
    """A stream that failed after it started ends with its error event, without ``[DONE]``
    (docs/compatibility.md, "Streams that fail")."""
    if not events:
        return False
    try:
        last = json.loads(events[-1])
    except ValueError:
        return False
    return isinstance(last, dict) and "error" in last
