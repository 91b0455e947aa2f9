"""Hypothesis strategies for the POST routes: spec-driven requests and hostile ones.

* :func:`spec_cases` draws requests from the 2024-10-21 spec with schemathesis: bodies valid for
  the operation's request schema (``positive``) and bodies that break it (``negative``), sent to a
  real deployment with a good key and a known api-version, so that they reach the engine.
* :func:`hostile_cases` adds what schemathesis does not aim at: huge numbers, deep nesting, lone
  surrogates, broken JSON, nulls, unknown fields, and bad api-versions, keys and deployments.

A route is described by an :class:`Operation`; adding completions or embeddings is one entry in
``OPERATIONS`` (see docs/conformance.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conformance.deviations import NEW, OPENAI
from tests.conformance.validator import raw_spec

__all__ = ["GOOD_KEY", "OPERATIONS", "Case", "Operation", "cases", "hostile_cases", "spec_cases"]

GOOD_KEY = "<a valid key>"  # replaced by the server's key when the case is sent
API_VERSIONS: tuple[str | None, ...] = (
    "2024-10-21",
    "2023-05-15",
    "2024-06-01",
    "2025-04-01-preview",
    "2022-12-01",
)
V1_VERSIONS: tuple[str | None, ...] = (None, "v1", "preview")


@dataclass(frozen=True)
class Operation:
    """One POST route: the spec path, a deployment that serves it, a minimal valid body."""

    name: str
    spec_path: str  # in the 2024-10-21 file
    deployment: str
    minimal: dict[str, Any]
    streams: bool = True  # the route takes "stream": true (embeddings do not)
    # Request properties removed before generation, with the reason (hostile cases still send
    # them as unknown fields).
    skipped: dict[str, str] = field(default_factory=dict)
    spec: str = NEW  # the spec file describing it
    # Where the deployment goes: the path (Azure's deployment routes) or the body's "model"
    # (the v1 and Responses routes, which are sent to ``url``).
    url: str | None = None
    versions: tuple[str | None, ...] = API_VERSIONS  # the api-versions drawn

    @property
    def route(self) -> str:
        return self.spec_path.removeprefix("/deployments/{deployment-id}/")

    def path(self, deployment: str) -> str:
        """The request path for ``deployment`` (ignored when the body names it)."""
        return self.url or f"/openai/deployments/{deployment}/{self.route}"

    def named(self, body: Any, deployment: str) -> Any:
        """``body`` naming ``deployment`` where the route reads it from the body."""
        if self.url is not None and isinstance(body, dict):
            return {**self.minimal, **body, "model": deployment}
        return body


OPERATIONS: dict[str, Operation] = {
    "chat": Operation(
        name="chat",
        spec_path="/deployments/{deployment-id}/chat/completions",
        deployment="gpt-4",
        minimal={"messages": [{"role": "user", "content": "hi"}]},
        skipped={"data_sources": "Azure On-Your-Data: its schema makes generation 2x slower"},
    ),
    "completions": Operation(
        name="completions",
        spec_path="/deployments/{deployment-id}/completions",
        deployment="gpt-4",
        minimal={"prompt": "hi"},
    ),
    "embeddings": Operation(
        name="embeddings",
        spec_path="/deployments/{deployment-id}/embeddings",
        deployment="text-embedding-ada-002",
        minimal={"input": "hi"},
        streams=False,
    ),
    "responses": Operation(
        name="responses",
        spec_path="/responses",
        deployment="gpt-4",
        minimal={"model": "gpt-4", "input": "hi"},
        spec=OPENAI,
        url="/openai/v1/responses",
        versions=V1_VERSIONS,
    ),
    "responses-dated": Operation(
        name="responses-dated",
        spec_path="/responses",
        deployment="gpt-4",
        minimal={"model": "gpt-4", "input": "hi"},
        spec=OPENAI,
        url="/openai/responses",
        versions=("2025-03-01-preview", "2025-04-01-preview", "2024-10-21", None),
    ),
}


@dataclass(frozen=True)
class Case:
    """One request: where it goes, with what credentials, carrying what bytes."""

    path: str
    api_version: str | None
    headers: dict[str, str]
    content: bytes

    def __repr__(self) -> str:
        content = self.content if len(self.content) <= 300 else self.content[:300] + b"..."
        return f"Case({self.url()!r}, {self.headers!r}, {content!r} ({len(self.content)} bytes))"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints failing examples with this (a 100 kB body would drown the report).
        printer.text(repr(self))

    def url(self) -> str:
        query = "" if self.api_version is None else "?api-version=" + quote(self.api_version)
        return self.path + query

    def body(self) -> Any:
        """The JSON body, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.content)
        except ValueError:
            return None

    def with_body(self, body: Any) -> Case:
        return Case(self.path, self.api_version, self.headers, json.dumps(body).encode())


def _parts(doc: dict[str, Any], operation: Operation) -> list[dict[str, Any]]:
    """The request body schema of ``operation`` and its ``allOf`` parts, references followed."""

    def follow(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else node

    content = doc["paths"][operation.spec_path]["post"]["requestBody"]["content"]
    schema = follow(content["application/json"]["schema"])
    return [schema, *(follow(part) for part in schema.get("allOf", []))]


def _request_schema(operation: Operation) -> dict[str, Any]:
    """A copy of the operation's spec without ``operation.skipped`` in its request body."""
    doc = raw_spec(operation.spec)
    for part in _parts(doc, operation):
        for name in operation.skipped:
            part.get("properties", {}).pop(name, None)
    return doc


def _property_names(operation: Operation) -> list[str]:
    doc = raw_spec(operation.spec)
    return sorted({name for part in _parts(doc, operation) for name in part.get("properties", {})})


@cache
def _schemathesis_operation(name: str) -> Any:
    operation = OPERATIONS[name]
    return schemathesis.openapi.from_dict(_request_schema(operation))[operation.spec_path]["POST"]


def _encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def spec_cases(operation: Operation, mode: str = "positive") -> st.SearchStrategy[Case]:
    """Requests with a schemathesis body (``positive``: valid per the spec; ``negative``: not).

    Half of the positive bodies of a streaming operation are sent with ``"stream": true`` (the
    spec allows it; left to chance, hardly any stream is drawn).
    """
    generated = _schemathesis_operation(operation.name).as_strategy(
        generation_mode=GenerationMode(mode),
        path_parameters={"deployment-id": operation.deployment},
        headers={"api-key": GOOD_KEY},
    )
    path = operation.path(operation.deployment)
    streaming = st.booleans() if mode == "positive" and operation.streams else st.just(False)

    def build(body: Any, version: str | None, stream: bool) -> Case:
        if mode == "positive":
            body = operation.named(body, operation.deployment)
        if stream and isinstance(body, dict):
            body = {**body, "stream": True}
        headers = {"api-key": GOOD_KEY, "content-type": "application/json"}
        return Case(path, version, headers, _encoded(body))

    return st.builds(
        build, generated.map(lambda case: case.body), st.sampled_from(operation.versions), streaming
    )


# --- hostile pieces --------------------------------------------------------------------------

HUGE_NUMBERS = st.sampled_from(
    [2**31, 2**32 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 1e308, -1e308, 5e-324, -0.0]
)
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "\x00", "\u202e", "\ufeff", "😀" * 50, "a\u0300" * 20, "<|endoftext|>", "[DONE]"]
    ),
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | ODD_TEXT
    | HUGE_NUMBERS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _hostile_value(value_names: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(st.sampled_from(value_names), JSON_VALUES)


def _deep(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


def hostile_bodies(operation: Operation) -> st.SearchStrategy[bytes]:
    """Raw request bodies that a careful server must refuse (or serve) without breaking."""
    names = _property_names(operation)
    minimal = operation.minimal

    def dumped(body: Any) -> bytes:
        return json.dumps(body).encode()

    wrong_field = _hostile_value(names).map(lambda kv: dumped({**minimal, kv[0]: kv[1]}))
    unknown_field = st.tuples(st.text(min_size=1, max_size=12), JSON_VALUES).map(
        lambda kv: dumped({**minimal, kv[0]: kv[1]})
    )
    first = next(iter(minimal))
    replaced = JSON_VALUES.map(lambda v: dumped({**minimal, first: v}))
    nulls = st.sets(st.sampled_from(names), min_size=1).map(
        lambda keys: dumped({**minimal, **{k: None for k in keys}})
    )
    nested = st.tuples(st.sampled_from([64, 1000, 100_000]), st.sampled_from(["list", "dict"])).map(
        lambda d: f'{{"{first}": {_deep(*d)}}}'.encode()
    )
    raw = st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b'"text"',
                b"\xef\xbb\xbf" + dumped(minimal),  # a UTF-8 BOM
                dumped(minimal)[:-1],  # truncated
                dumped(minimal) + b"{}",  # trailing data
                b'{"messages": NaN, "max_tokens": Infinity}',
                b'{"a": 1, "a": 2}',
            ]
        ),
        JSON_VALUES.map(dumped),
    )
    surrogates = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "\\u0000"]).map(
        lambda s: dumped(minimal).replace(b"hi", s.encode())
    )
    return st.one_of(wrong_field, unknown_field, replaced, nulls, nested, raw, surrogates)


# --- whole requests --------------------------------------------------------------------------


def _headers() -> st.SearchStrategy[dict[str, str]]:
    # Printable ASCII without surrounding blanks: what an HTTP client can send at all.
    ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
        str.strip
    )
    good = {"api-key": GOOD_KEY, "content-type": "application/json"}
    return st.one_of(
        st.just(good),
        ascii_text.map(lambda k: {**good, "api-key": k}),
        ascii_text.map(lambda k: {"authorization": f"Bearer {k}".strip()}),
        st.just({"authorization": f"Bearer {GOOD_KEY}", "content-type": "text/plain"}),
        st.just({"content-type": "application/json"}),
        st.just({"api-key": GOOD_KEY}),
    )


def hostile_cases(operation: Operation) -> st.SearchStrategy[Case]:
    """Hostile bodies to a good address, or a good body to a hostile address."""
    good_path = operation.path(operation.deployment)
    good_headers = {"api-key": GOOD_KEY, "content-type": "application/json"}
    bodies = st.builds(
        lambda content, version: Case(good_path, version, good_headers, content),
        hostile_bodies(operation),
        st.sampled_from(operation.versions),
    )
    deployment = st.one_of(
        st.just(operation.deployment),
        st.text(min_size=1, max_size=20).map(lambda d: quote(d, safe="")),
    )
    version = st.one_of(st.sampled_from(operation.versions), st.none(), st.text(max_size=20))
    envelopes = st.builds(
        lambda d, v, h: Case(
            operation.path(d),
            v,
            h,
            json.dumps(operation.named(dict(operation.minimal), d)).encode(),
        ),
        deployment,
        version,
        _headers(),
    )
    return st.one_of(bodies, envelopes)


def cases(operation: Operation) -> st.SearchStrategy[Case]:
    """The whole mix: valid and invalid spec bodies, hostile bodies and envelopes."""
    return st.one_of(
        spec_cases(operation, "positive"),
        spec_cases(operation, "negative"),
        hostile_cases(operation),
    )


# --- Files and Batch (the routes OpenAI's spec describes) --------------------------------------

BATCH_MINIMAL = {
    "input_file_id": "file-" + "0" * 32,
    "endpoint": "/chat/completions",
    "completion_window": "24h",
}
_BATCH_FIELDS = [*BATCH_MINIMAL, "metadata", "output_expires_after"]
_BATCH_PATHS = ("/openai/batches", "/openai/v1/batches")
_UPLOAD_PATHS = ("/openai/files", "/openai/v1/files")


def _version_for(path: str) -> st.SearchStrategy[str | None]:
    if "/v1/" in path:
        return st.sampled_from([None, "v1", "preview", "2024-10-21"])
    return st.one_of(st.sampled_from(API_VERSIONS), st.none())


def batch_cases() -> st.SearchStrategy[Case]:
    """Bodies for ``POST /openai/batches`` and ``/openai/v1/batches`` (and ``…/{id}/cancel``):
    plausible ones (valid values, real endpoints, expiry objects, metadata), one field given
    any JSON value, unknown fields, and raw bytes."""
    plausible = st.fixed_dictionaries(
        {
            "input_file_id": st.one_of(st.just(BATCH_MINIMAL["input_file_id"]), ODD_TEXT),
            "endpoint": st.sampled_from(
                ["/chat/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings", ""]
            ),
            "completion_window": st.sampled_from(["24h", "48h", "", "24H"]),
        },
        optional={
            "metadata": st.one_of(st.dictionaries(ODD_TEXT, ODD_TEXT, max_size=20), JSON_VALUES),
            "output_expires_after": st.one_of(
                st.fixed_dictionaries(
                    {"anchor": st.just("created_at"), "seconds": st.integers(0, 3_000_000)}
                ),
                JSON_VALUES,
            ),
        },
    ).map(lambda body: json.dumps(body).encode())
    wrong = _hostile_value(_BATCH_FIELDS).map(
        lambda kv: json.dumps({**BATCH_MINIMAL, kv[0]: kv[1]}).encode()
    )
    raw = st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"null", b"[]", json.dumps(BATCH_MINIMAL).encode()[:-1]]),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    )
    headers = {"api-key": GOOD_KEY, "content-type": "application/json"}

    def build(path: str, suffix: str, version: Any, content: bytes) -> Case:
        return Case(path + suffix, version, headers, content)

    def with_version(path: str) -> st.SearchStrategy[Case]:
        suffix = st.one_of(
            st.just(""),
            st.text(min_size=1, max_size=12).map(lambda t: f"/{quote(t, safe='')}/cancel"),
        )
        return st.builds(
            build, st.just(path), suffix, _version_for(path), st.one_of(plausible, wrong, raw)
        )

    return st.sampled_from(_BATCH_PATHS).flatmap(with_version)


def upload_cases() -> st.SearchStrategy[Case]:
    """Multipart (and not) uploads to ``POST /openai/files`` and ``/openai/v1/files``."""
    boundary = "cerulean-fuzz-boundary"

    def form(fields: dict[str, str], file: bytes | None, filename: str) -> bytes:
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quote(k)}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        ]
        data = "".join(parts).encode()
        if file is not None:
            data += (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                ).encode()
                + file
                + b"\r\n"
            )
        return data + f"--{boundary}--\r\n".encode()

    valid = st.fixed_dictionaries(
        {"purpose": st.sampled_from(["batch", "fine-tune", "assistants"])},
        optional={
            "expires_after[anchor]": st.just("created_at"),
            "expires_after[seconds]": st.integers(1_000_000, 3_000_000).map(str),
        },
    )
    random_fields = st.dictionaries(
        st.sampled_from(
            ["purpose", "expires_after[anchor]", "expires_after[seconds]", "other", ""]
        ),
        st.one_of(
            st.sampled_from(["batch", "fine-tune", "assistants", "vision", "created_at"]),
            st.integers(-5, 3_000_000).map(str),
            ODD_TEXT.map(lambda t: t.replace("\r", "")),
        ),
        max_size=4,
    )
    fields = st.one_of(valid, random_fields)
    multipart = st.builds(
        form,
        fields,
        st.one_of(st.none(), st.binary(max_size=200)),
        st.sampled_from(["in.jsonl", "", "../../etc/passwd", "a\\b.jsonl", "😀.txt"]),
    )
    good = {"api-key": GOOD_KEY, "content-type": f"multipart/form-data; boundary={boundary}"}
    odd_types = st.sampled_from(
        ["application/json", "multipart/form-data", "multipart/form-data; boundary=", "text/plain"]
    )

    def build(path: str, version: Any, content: bytes, content_type: str | None) -> Case:
        headers = dict(good) if content_type is None else {**good, "content-type": content_type}
        return Case(path, version, headers, content)

    def with_version(path: str) -> st.SearchStrategy[Case]:
        return st.builds(
            build,
            st.just(path),
            _version_for(path),
            st.one_of(multipart, st.binary(max_size=64)),
            st.one_of(st.none(), odd_types),
        )

    return st.sampled_from(_UPLOAD_PATHS).flatmap(with_version)
