"""Where real Azure differs from its published specs, written down one rule at a time.

Each :class:`Deviation` patches an in-memory copy of a vendored spec (``specs/``) or adds a schema
to the ``extras`` document; the validator never relaxes anything that is not listed here. Every id
is explained in ``docs/conformance.md`` (a unit test checks that the two lists agree).

The documents are addressed by name: ``"2024-10-21"``, ``"2023-05-15"`` (the spec files) and
``"extras"`` (schemas the specs lack). References between them are ``urn:spec:<name>#<pointer>``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DEVIATIONS", "OPENAI", "Deviation", "apply_all", "urn"]

Docs = dict[str, dict[str, Any]]

NEW = "2024-10-21"
OLD = "2023-05-15"
OPENAI = "openai-2.3.0"  # OpenAI's own description (openai-openapi 2.3.0): the Responses API
CHAT_PATH = "/paths/~1deployments~1{deployment-id}~1chat~1completions/post"
COMPLETIONS_PATH = "/paths/~1deployments~1{deployment-id}~1completions/post"
EMBEDDINGS_PATH = "/paths/~1deployments~1{deployment-id}~1embeddings/post"
OK_JSON = "/responses/200/content/application~1json/schema"


def urn(doc: str, pointer: str) -> str:
    """The ``$ref`` of ``pointer`` (``/components/...``) inside document ``doc``."""
    return f"urn:spec:{doc}#{pointer}"


def _ref(doc: str, pointer: str) -> dict[str, Any]:
    return {"$ref": urn(doc, pointer)}


def _schema(name: str) -> str:
    return f"/components/schemas/{name}"


def resolve(docs: Docs, doc: str, pointer: str) -> dict[str, Any]:
    """The object at JSON pointer ``pointer`` in ``docs[doc]`` (RFC 6901 escapes).

    Four lines rather than ``referencing``'s resolver: the patches need the live dict to edit,
    with no ``$ref`` followed on the way.
    """
    node: Any = docs[doc]
    for raw in pointer.strip("/").split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    assert isinstance(node, dict), pointer
    return node


def _nullable_ref(doc: str, pointer: str) -> dict[str, Any]:
    # OAS 3.0 ignores siblings of $ref, so "nullable" beside it would mean nothing.
    return {"anyOf": [_ref(doc, pointer), {"enum": [None]}]}


@dataclass(frozen=True)
class Deviation:
    """One documented difference between a spec file and what Azure (and Cerulean) send."""

    id: str
    summary: str
    apply: Callable[[Docs], None]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _nullable_enums(docs: Docs) -> None:
    for name in (NEW, OLD):
        for schema in _walk(docs[name]):
            enum = schema.get("enum")
            if schema.get("nullable") is True and isinstance(enum, list) and None not in enum:
                enum.append(None)


def _prompt_filter_chunk(docs: Docs) -> None:
    docs["extras"]["promptFilterChunk"] = {
        "type": "object",
        "required": ["choices", "created", "id", "model", "object", "prompt_filter_results"],
        "additionalProperties": False,
        "properties": {
            "choices": {"type": "array", "maxItems": 0},
            "created": {"type": "integer", "enum": [0]},
            "id": {"type": "string", "enum": [""]},
            "model": {"type": "string", "enum": [""]},
            "object": {"type": "string", "enum": [""]},
            "prompt_filter_results": _ref(NEW, _schema("promptFilterResults")),
            "usage": {"enum": [None]},
        },
    }


def _stream_usage(docs: Docs) -> None:
    stream = resolve(docs, NEW, _schema("createChatCompletionStreamResponse"))
    stream["properties"]["usage"] = _nullable_ref(NEW, _schema("completionUsage"))
    # The spec's leftover of this property: a "required" list misplaced under "object".
    stream["properties"]["object"].pop("required", None)


def _stream_choice_filter_results(docs: Docs) -> None:
    stream = resolve(docs, NEW, _schema("createChatCompletionStreamResponse"))
    choice = stream["properties"]["choices"]["items"]
    choice["properties"]["content_filter_results"] = _ref(
        NEW, _schema("contentFilterChoiceResults")
    )


def _async_filter_annotations(docs: Docs) -> None:
    docs["extras"]["annotationChunk"] = {
        "type": "object",
        "required": ["choices", "created", "id", "model", "object"],
        "additionalProperties": False,
        "properties": {
            "choices": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", "finish_reason", "content_filter_results"],
                    "additionalProperties": False,
                    "properties": {
                        "index": {"type": "integer"},
                        "finish_reason": {"enum": [None]},
                        "content_filter_results": _ref(NEW, _schema("contentFilterChoiceResults")),
                        "content_filter_offsets": {
                            "type": "object",
                            "required": ["check_offset", "start_offset", "end_offset"],
                            "additionalProperties": False,
                            "properties": {
                                k: {"type": "integer", "minimum": 0}
                                for k in ("check_offset", "start_offset", "end_offset")
                            },
                        },
                    },
                },
            },
            "created": {"type": "integer", "enum": [0]},
            "id": {"type": "string", "enum": [""]},
            "model": {"type": "string", "enum": [""]},
            "object": {"type": "string", "enum": [""]},
            "usage": {"enum": [None]},
        },
    }


def _custom_blocklists(docs: Docs) -> None:
    detail = {
        "type": "object",
        "required": ["filtered", "id"],
        "additionalProperties": False,
        "properties": {"filtered": {"type": "boolean"}, "id": {"type": "string"}},
    }
    resolve(docs, NEW, _schema("contentFilterResultsBase"))["properties"]["custom_blocklists"] = {
        "type": "object",
        "required": ["filtered", "details"],
        "additionalProperties": False,
        "properties": {
            "filtered": {"type": "boolean"},
            "details": {"type": "array", "items": detail},
        },
    }


def _error_nullable_fields(docs: Docs) -> None:
    for prop in ("param", "type"):
        resolve(docs, NEW, _schema("error"))["properties"][prop]["nullable"] = True
    resolve(docs, NEW, _schema("errorBase"))["properties"]["code"]["nullable"] = True
    old = resolve(docs, OLD, _schema("errorResponse"))["properties"]["error"]
    for prop in ("param", "type", "code"):
        old["properties"][prop]["nullable"] = True


def _error_wire_extras(docs: Docs) -> None:
    extras = {
        "status": {"type": "integer"},
        "innererror": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "content_filter_result": _ref(NEW, _schema("contentFilterPromptResults")),
            },
        },
    }
    resolve(docs, NEW, _schema("error"))["properties"].update(extras)
    resolve(docs, OLD, _schema("errorResponse"))["properties"]["error"]["properties"].update(
        {**extras, "inner_error": {"type": "object"}}
    )


def _apim_401(docs: Docs) -> None:
    docs["extras"]["apimUnauthorized"] = {
        "type": "object",
        "required": ["statusCode", "message"],
        "additionalProperties": False,
        "properties": {
            "statusCode": {"type": "integer", "enum": [401]},
            "message": {"type": "string"},
        },
    }


def _completions_stream_chunks(docs: Docs) -> None:
    for name, pointer in (
        (NEW, _schema("createCompletionResponse")),
        (OLD, COMPLETIONS_PATH + OK_JSON),
    ):
        chunk = copy.deepcopy(resolve(docs, name, pointer))
        finish = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
        finish["nullable"] = True
        if "enum" in finish:
            finish["enum"].append(None)
        chunk["properties"]["usage"] = _nullable_ref(NEW, _schema("completionUsage"))
        docs["extras"][f"completionStreamChunk-{name}"] = _rebase(chunk, name)


def _legacy_logprobs_null(docs: Docs) -> None:
    item = resolve(docs, OLD, COMPLETIONS_PATH + OK_JSON)["properties"]["choices"]["items"]
    item["properties"]["logprobs"]["nullable"] = True
    chat = resolve(docs, OLD, CHAT_PATH + OK_JSON)["properties"]["choices"]["items"]
    chat["properties"]["message"]["properties"]["content"]["nullable"] = True


def _echo_first_token_null(docs: Docs) -> None:
    for name, pointer in (
        (NEW, _schema("createCompletionResponse")),
        (OLD, COMPLETIONS_PATH + OK_JSON),
    ):
        choice = resolve(docs, name, pointer)["properties"]["choices"]["items"]
        logprobs = choice["properties"]["logprobs"].get("properties", {})
        for key in ("token_logprobs", "top_logprobs"):
            if key in logprobs:
                logprobs[key]["items"]["nullable"] = True


def _embeddings_base64(docs: Docs) -> None:
    base64 = {
        "type": "string",
        "pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    }
    for name in (NEW, OLD):
        data = resolve(docs, name, EMBEDDINGS_PATH + OK_JSON)["properties"]["data"]["items"]
        vector = data["properties"]["embedding"]
        data["properties"]["embedding"] = {"anyOf": [vector, base64]}


def _newer_azure_fields(docs: Docs) -> None:
    body = resolve(docs, NEW, _schema("createChatCompletionResponse"))
    body["properties"]["service_tier"] = {"type": "string", "nullable": True}
    message = resolve(docs, NEW, _schema("chatCompletionResponseMessage"))
    message["properties"]["annotations"] = {"type": "array"}


def _usage_details(docs: Docs) -> None:
    usage = resolve(docs, NEW, _schema("completionUsage"))
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    usage["properties"]["prompt_tokens_details"] = counts
    usage["properties"]["completion_tokens_details"] = counts


_CLOSED_NEW = (
    _schema("createChatCompletionResponse"),
    _schema("createChatCompletionResponse") + "/properties/choices/items",
    _schema("chatCompletionResponseMessage"),
    _schema("createChatCompletionStreamResponse"),
    _schema("createChatCompletionStreamResponse") + "/properties/choices/items",
    _schema("chatCompletionStreamResponseDelta"),
    _schema("completionUsage"),
    _schema("createCompletionResponse"),
    _schema("createCompletionResponse") + "/properties/choices/items",
    EMBEDDINGS_PATH + OK_JSON,
    EMBEDDINGS_PATH + OK_JSON + "/properties/data/items",
    EMBEDDINGS_PATH + OK_JSON + "/properties/usage",
    _schema("errorResponse"),
    _schema("error"),
)


def _closed_objects(docs: Docs) -> None:
    error = resolve(docs, NEW, _schema("error"))
    # "error" inherits code/message through allOf, which additionalProperties cannot see.
    error["properties"].update(resolve(docs, NEW, _schema("errorBase"))["properties"])
    for pointer in _CLOSED_NEW:
        resolve(docs, NEW, pointer)["additionalProperties"] = False
    for name, chunk in docs["extras"].items():
        if name.startswith("completionStreamChunk-2024"):
            chunk["additionalProperties"] = False
            chunk["properties"]["choices"]["items"]["additionalProperties"] = False


def _error_envelope(docs: Docs) -> None:
    resolve(docs, NEW, _schema("errorResponse"))["required"] = ["error"]
    resolve(docs, NEW, _schema("error"))["required"] = ["message"]
    old = resolve(docs, OLD, _schema("errorResponse"))
    old["required"] = ["error"]
    old["properties"]["error"]["required"] = ["message"]


def _deleted_response(docs: Docs) -> None:
    docs["extras"]["deletedResponse"] = {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response"]},
            "deleted": {"type": "boolean", "enum": [True]},
        },
    }


def _rebase(node: Any, doc: str) -> Any:
    """Make local ``#/...`` references of a schema copied out of ``doc`` absolute."""
    if isinstance(node, dict):
        out = {k: _rebase(v, doc) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            out["$ref"] = f"urn:spec:{doc}{ref}"
        return out
    if isinstance(node, list):
        return [_rebase(v, doc) for v in node]
    return node


# Order matters: later rules see the results of earlier ones (the closed-object rule comes after
# every rule that adds properties).
DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "nullable-enum",
        "`nullable: true` beside an `enum` admits null (OAS 3.0.3 would require null in the enum; "
        "the spec authors mean it: stream `finish_reason` is null until the last chunk).",
        _nullable_enums,
    ),
    Deviation(
        "stream-prompt-filter-chunk",
        "Streams on api-versions with content-filter annotations open with a chunk of empty "
        '`choices`, `id`/`model`/`object` "" and `created` 0 that only carries '
        "`prompt_filter_results`; it is accepted as the first event only.",
        _prompt_filter_chunk,
    ),
    Deviation(
        "stream-usage",
        "Chat chunks carry `usage` (null, or the totals on the extra last chunk with empty "
        "`choices` when `stream_options.include_usage` is set); the 2024-10-21 chunk schema "
        "lost this property (its `required` list survives, misplaced under `object`).",
        _stream_usage,
    ),
    Deviation(
        "stream-choice-content-filter-results",
        "Each chat chunk's choice carries `content_filter_results` (`{}` when nothing was "
        "evaluated); the chunk schema does not list it.",
        _stream_choice_filter_results,
    ),
    Deviation(
        "stream-async-filter-annotations",
        "With a policy in mode `Asynchronous_filter`, streams carry annotation chunks after the "
        'text they cover: `id`/`model`/`object` "", `created` 0, choices of `index`, '
        "`finish_reason` null, `content_filter_results` and `content_filter_offsets` "
        "{`check_offset`, `start_offset`, `end_offset`}; accepted after the first event.",
        _async_filter_annotations,
    ),
    Deviation(
        "custom-blocklists",
        "Content-filter results carry `custom_blocklists` {`filtered`, `details`: [{`filtered`, "
        "`id`}]} when a policy applies blocklists (the preview specs' shape; 2024-10-21 lacks it).",
        _custom_blocklists,
    ),
    Deviation(
        "error-nullable-fields",
        'Azure sends `"param": null`, `"code": null` and `"type": null` in errors; the specs type '
        "them as plain strings.",
        _error_nullable_fields,
    ),
    Deviation(
        "error-wire-extras",
        "Content-filter 400s carry an integer `status` and `innererror` "
        "{`code`, `content_filter_result`} (the wire spelling; the spec says `inner_error`).",
        _error_wire_extras,
    ),
    Deviation(
        "apim-401",
        "A request without credentials gets API Management's "
        '`{"statusCode": 401, "message": ...}` without the `error` wrapper (status 401 only).',
        _apim_401,
    ),
    Deviation(
        "legacy-nulls",
        "In the 2023-05-15 file, completions `logprobs` and chat `message.content` are not "
        "nullable; Azure sends `logprobs: null` (the file's own example does).",
        _legacy_logprobs_null,
    ),
    Deviation(
        "echo-first-token-null",
        "With `echo` and `logprobs`, the prompt's first token has no logprob (nothing precedes "
        "it): `token_logprobs[0]` and `top_logprobs[0]` are null, as OpenAI sends them.",
        _echo_first_token_null,
    ),
    Deviation(
        "completions-stream-chunks",
        "Completions chunks use the completion shape as the spec says, but `finish_reason` is null "
        "until each choice's last chunk and `usage` may appear (null, or the totals).",
        _completions_stream_chunks,
    ),
    Deviation(
        "embeddings-base64",
        'With `encoding_format: "base64"` an embedding is a base64 string of little-endian '
        "float32s, not an array of numbers.",
        _embeddings_base64,
    ),
    Deviation(
        "usage-details",
        "`usage` may carry `prompt_tokens_details` and `completion_tokens_details` maps of "
        "integer counts (Azure sends `cached_tokens`, `reasoning_tokens`, ...).",
        _usage_details,
    ),
    Deviation(
        "newer-azure-fields",
        "Current Azure adds `service_tier` to chat bodies and `annotations` (an array) to "
        "messages; Cerulean does not send them, the closed objects below admit them.",
        _newer_azure_fields,
    ),
    Deviation(
        "closed-objects",
        "Stricter than the spec: the 2024-10-21 response objects (bodies, choices, messages, "
        "deltas, usage, errors) admit only the spec's properties plus the extras listed here.",
        _closed_objects,
    ),
    Deviation(
        "responses-delete-body",
        '`DELETE /responses/{id}` answers 200 with `{id, object: "response", deleted: true}` '
        "(OpenAI's documented example; the 2.3.0 spec gives the 200 no schema).",
        _deleted_response,
    ),
    Deviation(
        "error-envelope",
        "Stricter than the spec: an error body must have `error` with a `message` (the spec's "
        '`errorResponse` would accept `{}` or `{"detail": ...}`).',
        _error_envelope,
    ),
)


def apply_all(docs: Docs) -> None:
    """Apply every deviation, in order, to ``docs`` (copies of the spec files + ``extras``)."""
    docs.setdefault("extras", {})
    for deviation in DEVIATIONS:
        deviation.apply(docs)


# -- OpenAI's spec (openai-openapi 2.3.0, OpenAPI 3.1): the Files and Batch surfaces --------------

OPENAI = "openai-2.3.0"
_FILE_NULLABLE = ("expires_at", "status_details")
_BATCH_NULLABLE = (
    "errors",
    "output_file_id",
    "error_file_id",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _openai_nullable_fields(docs: Docs) -> None:
    schemas = docs[OPENAI]["components"]["schemas"]
    for name, nullable in (("OpenAIFile", _FILE_NULLABLE), ("Batch", _BATCH_NULLABLE)):
        props = schemas[name]["properties"]
        for prop in nullable:
            props[prop] = _or_null(props[prop])


def _openai_list_ids_nullable(docs: Docs) -> None:
    schemas = docs[OPENAI]["components"]["schemas"]
    for name in ("ListFilesResponse", "ListBatchesResponse"):
        props = schemas[name]["properties"]
        for prop in ("first_id", "last_id"):
            props[prop] = _or_null(props.get(prop, {"type": "string"}))


def _openai_closed_objects(docs: Docs) -> None:
    schemas = docs[OPENAI]["components"]["schemas"]
    for name in ("OpenAIFile", "Batch", "BatchRequestCounts"):
        schemas[name]["additionalProperties"] = False


OPENAI_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "openai-nullable-fields",
        "Files and batches send every optional field, null when unset (`expires_at`, "
        "`status_details`; a batch's `errors`, file ids and `*_at` timestamps), as Azure's "
        "samples and openai-python's types have them; OpenAI's spec types them as non-null.",
        _openai_nullable_fields,
    ),
    Deviation(
        "openai-list-ids-nullable",
        "An empty file or batch list has `first_id` and `last_id` null.",
        _openai_list_ids_nullable,
    ),
    Deviation(
        "openai-closed-objects",
        "Stricter than the spec: the file and batch objects (and `request_counts`) admit only "
        "the spec's properties.",
        _openai_closed_objects,
    ),
)


def apply_openai(docs: Docs) -> None:
    """Apply the Files/Batch deviations to ``docs[OPENAI]`` (a copy of OpenAI's spec)."""
    for deviation in OPENAI_DEVIATIONS:
        deviation.apply(docs)
