"""The conformance checker itself: Azure's real bodies pass, broken ones are caught."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conformance.deviations import DEVIATIONS
from tests.conformance.recorder import (
    RECORDER,
    AsyncRecordingTransport,
    Recorder,
    RecordingTransport,
    record_responses,
)
from tests.conformance.validator import (
    SPEC_DIR,
    Conformance,
    Exchange,
    operation_for,
    report,
    spec_for,
)

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/openai/deployments/gpt-4/chat/completions"
SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            "hate": SAFE,
            "jailbreak": {"filtered": False, "detected": False},
            "self_harm": SAFE,
            "sexual": SAFE,
            "violence": SAFE,
        },
    }
]
# Real Azure answers, as quoted in the wire reference (§4.1, §4.4, §4.5, §4.6, §5).
AZURE_CHAT: dict[str, Any] = {
    "choices": [
        {
            "content_filter_results": {
                "hate": SAFE,
                "protected_material_code": {"filtered": False, "detected": False},
                "protected_material_text": {"filtered": False, "detected": False},
                "self_harm": SAFE,
                "sexual": SAFE,
                "violence": SAFE,
            },
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {
                "annotations": [],
                "content": "I'm doing well, thank you! How can I assist you today?",
                "refusal": None,
                "role": "assistant",
            },
        }
    ],
    "created": 1776185964,
    "id": "chatcmpl-DUbOeGtdzUYiVCXIhCNOIAu2LOGPd",
    "model": "gpt-4.1-mini-2025-04-14",
    "object": "chat.completion",
    "prompt_filter_results": PROMPT_FILTER,
    "service_tier": "default",
    "system_fingerprint": "fp_b6f445fc1c",
    "usage": {
        "completion_tokens": 15,
        "completion_tokens_details": {"accepted_prediction_tokens": 0, "reasoning_tokens": 0},
        "prompt_tokens": 20,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": 35,
    },
}
_CHUNK = {
    "created": 1750697159,
    "id": "chatcmpl-BleatwEUn3D8iXsgXpDqeOPEMuW3j",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion.chunk",
    "system_fingerprint": "fp_ee1d74bde0",
}
AZURE_STREAM = [
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": PROMPT_FILTER,
    },
    {
        **_CHUNK,
        "choices": [
            {
                "content_filter_results": {},
                "delta": {"content": "", "refusal": None, "role": "assistant"},
                "finish_reason": None,
                "index": 0,
                "logprobs": None,
            }
        ],
    },
    {
        **_CHUNK,
        "choices": [
            {
                "content_filter_results": {"hate": SAFE, "self_harm": SAFE},
                "delta": {"content": "Hallo"},
                "finish_reason": None,
                "index": 0,
                "logprobs": None,
            }
        ],
    },
    {
        **_CHUNK,
        "choices": [
            {
                "content_filter_results": {},
                "delta": {},
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
            }
        ],
    },
    {
        **_CHUNK,
        "choices": [],
        "usage": {"completion_tokens": 10, "prompt_tokens": 96, "total_tokens": 106},
    },
]
AZURE_COMPLETION: dict[str, Any] = {
    "id": "cmpl-4509KAos68kxOqpE2uYGw81j6m7uo",
    "object": "text_completion",
    "created": 1637097562,
    "model": "davinci",
    "choices": [
        {
            "index": 0,
            "text": "The price for bubblegum decreased on thursday.",
            "logprobs": None,
            "finish_reason": "stop",
            "content_filter_results": {"hate": SAFE},
        }
    ],
    "prompt_filter_results": PROMPT_FILTER,
    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
}
AZURE_EMBEDDINGS = {
    "object": "list",
    "model": "ada",
    "data": [{"object": "embedding", "index": 0, "embedding": [-0.012838088, -0.007421397]}],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}
AZURE_ERRORS: list[tuple[int, dict[str, Any]]] = [
    (404, {"error": {"code": "DeploymentNotFound", "message": "The API deployment ..."}}),
    (404, {"error": {"code": "404", "message": "Resource not found"}}),
    (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 32768 tokens. ...",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    (
        400,
        {
            "error": {
                "message": "Unrecognized request argument supplied: functions",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    ),
    (
        400,
        {
            "error": {
                "message": "The response was filtered ...",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {"sexual": {"filtered": True, "severity": "high"}},
                },
            }
        },
    ),
    (429, {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create ..."}}),
    (
        500,
        {
            "error": {
                "message": "The server had an error processing your request. ...",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    ),
    (401, {"statusCode": 401, "message": "Unauthorized. Access token is missing, ..."}),
]


def exchange(
    body: Any,
    *,
    path: str = CHAT,
    version: str | None = "2024-10-21",
    status: int = 200,
    content_type: str = "application/json",
    complete: bool = True,
) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Exchange("POST", path, version, status, content_type, raw, complete)


def sse(*events: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def stream(*events: Any, done: bool = True, **kwargs: Any) -> Exchange:
    return exchange(
        sse(*events, done=done), content_type="text/event-stream; charset=utf-8", **kwargs
    )


@pytest.fixture(scope="module")
def checker() -> Conformance:
    return Conformance()


def messages(checker: Conformance, ex: Exchange) -> list[str]:
    return [f"{v.where} {v.path}: {v.message}" for v in checker.check(ex)]


@pytest.mark.parametrize("version", ["2024-10-21", "2023-05-15", "2025-04-01-preview", None])
def test_azures_own_chat_bodies_conform(checker: Conformance, version: str | None) -> None:
    assert messages(checker, exchange(AZURE_CHAT, version=version)) == []
    assert messages(checker, stream(*AZURE_STREAM, version=version)) == []


@pytest.mark.parametrize("version", ["2024-10-21", "2023-05-15"])
def test_azures_completions_and_embeddings_conform(checker: Conformance, version: str) -> None:
    completions = "/openai/deployments/davinci/completions"
    assert messages(checker, exchange(AZURE_COMPLETION, path=completions, version=version)) == []
    chunk = {
        **AZURE_COMPLETION,
        "choices": [{**AZURE_COMPLETION["choices"][0], "finish_reason": None}],
    }
    assert (
        messages(checker, stream(chunk, AZURE_COMPLETION, path=completions, version=version)) == []
    )
    embeddings = "/openai/deployments/ada/embeddings"
    assert messages(checker, exchange(AZURE_EMBEDDINGS, path=embeddings, version=version)) == []
    packed = {
        **AZURE_EMBEDDINGS,
        "data": [{"object": "embedding", "index": 0, "embedding": "AACAPwAAAEA="}],
    }
    assert messages(checker, exchange(packed, path=embeddings, version=version)) == []
    v1 = "/openai/v1/embeddings"
    assert messages(checker, exchange(AZURE_EMBEDDINGS, path=v1, version=None)) == []


@pytest.mark.parametrize(("status", "body"), AZURE_ERRORS)
@pytest.mark.parametrize("version", ["2024-10-21", "2023-05-15"])
def test_azures_error_bodies_conform(
    checker: Conformance, status: int, body: dict[str, Any], version: str
) -> None:
    assert messages(checker, exchange(body, status=status, version=version)) == []
    assert messages(checker, exchange(body, path="/openai/models", status=status)) == []


def without(body: dict[str, Any], *path: str | int) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    node: Any = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def changed(body: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    node: Any = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (without(AZURE_CHAT, "choices", 0, "logprobs"), "'logprobs' is a required property"),
        (without(AZURE_CHAT, "choices", 0, "message", "refusal"), "'refusal' is a required"),
        (without(AZURE_CHAT, "created"), "'created' is a required property"),
        (changed(AZURE_CHAT, "chat.completion.chunk", "object"), "is not one of"),
        (changed(AZURE_CHAT, None, "choices", 0, "finish_reason"), "None for not nullable"),
        (changed(AZURE_CHAT, "tired", "choices", 0, "finish_reason"), "'tired' is not one of"),
        (changed(AZURE_CHAT, 1, "made_up"), "'made_up' was unexpected"),
        (
            changed(AZURE_CHAT, "x", "choices", 0, "message", "thoughts"),
            "'thoughts' was unexpected",
        ),
        (changed(AZURE_CHAT, "1", "usage", "total_tokens"), "'1' is not of type 'integer'"),
        (
            changed(AZURE_CHAT, "dire", "choices", 0, "content_filter_results", "hate", "severity"),
            "is not one of",
        ),
    ],
)
def test_broken_chat_bodies_are_caught(
    checker: Conformance, broken: dict[str, Any], expected: str
) -> None:
    found = messages(checker, exchange(broken))
    assert any(expected in m for m in found), found


def test_broken_streams_are_caught(checker: Conformance) -> None:
    first, role, content, end, usage = AZURE_STREAM
    assert "no final" in " ".join(messages(checker, stream(first, role, end, done=False)))
    # A client that stopped reading early is not blamed for the missing end.
    assert messages(checker, stream(first, role, done=False, complete=False)) == []
    # The prompt-filter chunk is an exception for the first event only (later, an empty-id
    # chunk must be an asynchronous filter's annotation chunk, which has no prompt results).
    assert "'prompt_filter_results' was unexpected" in " ".join(
        messages(checker, stream(role, first, end))
    )
    note = {
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "custom_blocklists": {"filtered": False, "details": []},
                },
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 9},
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }
    assert messages(checker, stream(first, role, content, note, end)) == []
    note["choices"][0]["content_filter_offsets"] = {"start_offset": -1}  # type: ignore[index]
    assert messages(checker, stream(first, role, content, note, end))
    bad_role = changed(role, "robot", "choices", 0, "delta", "role")
    assert "'robot' is not one of" in " ".join(messages(checker, stream(first, bad_role, end)))
    assert "'prompt_filter_results' is a required" in " ".join(
        messages(checker, stream(without(first, "prompt_filter_results"), role, end))
    )
    garbled = exchange(b"data: {oops\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    assert "not JSON" in " ".join(messages(checker, garbled))
    named = exchange(b"event: x\ndata: {}\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    assert "not a single `data: ` line" in " ".join(messages(checker, named))
    after = exchange(
        sse(role) + b"data: [DONE]\n\n" + sse(end, done=False), content_type="text/event-stream"
    )
    assert "events after [DONE]" in " ".join(messages(checker, after))
    # An error after the first byte is an error event: checked against errorResponse.
    assert (
        messages(
            checker,
            stream(
                first,
                {"error": {"message": "x", "type": "server_error", "param": None, "code": None}},
            ),
        )
        == []
    )
    assert "'message' is a required" in " ".join(messages(checker, stream(first, {"error": {}})))


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (422, {"detail": [{"loc": ["body"]}]}, "application/json", "'error' is a required"),
        (400, {"error": {"code": "x"}}, "application/json", "'message' is a required"),
        (
            400,
            {"error": {"message": "m", "extra": 1}},
            "application/json",
            "'extra' was unexpected",
        ),
        (500, b"Internal Server Error", "text/plain; charset=utf-8", "content-type"),
        (500, b"Internal Server Error", "application/json", "not JSON"),
        (401, {"statusCode": 403, "message": "m"}, "application/json", "is not one of [401]"),
        (403, {"statusCode": 403, "message": "m"}, "application/json", "'error' is a required"),
    ],
)
def test_non_azure_errors_are_caught(
    checker: Conformance, status: int, body: Any, content_type: str, expected: str
) -> None:
    found = messages(checker, exchange(body, status=status, content_type=content_type))
    assert any(expected in m for m in found), found


def test_2023_05_15_uses_its_own_file(checker: Conformance) -> None:
    old = without(AZURE_CHAT, "choices", 0, "message", "content")
    found = messages(checker, exchange(old, version="2023-05-15"))
    assert any("'content' is a required" in m for m in found), found
    # The old file does not require logprobs; the new one does.
    assert (
        messages(
            checker, exchange(without(AZURE_CHAT, "choices", 0, "logprobs"), version="2023-05-15")
        )
        == []
    )


def test_schema_choice() -> None:
    assert (
        spec_for("2023-05-15")
        == spec_for("2022-12-01")
        == spec_for("2023-03-15-preview")
        == "2023-05-15"
    )
    assert spec_for("2023-06-01-preview") == spec_for("2025-04-01-preview") == "2024-10-21"
    assert spec_for(None) == spec_for("preview") == spec_for("bogus") == "2024-10-21"
    assert operation_for("/openai/deployments/a/chat/completions") == "chat"
    assert operation_for("//openai//deployments/a/chat//completions") == "chat"
    assert operation_for("/openai/v1/embeddings") == "embeddings"
    assert operation_for("/openai/deployments/a/completions") == "completions"
    assert operation_for("/openai/models") is None
    assert operation_for("/openai/deployments/a/chat/completions/x") is None


def test_unread_and_unspecified_responses_pass(checker: Conformance) -> None:
    assert messages(checker, exchange(b"", status=499, content_type="")) == []
    # A body the client closed without reading (the SDK does so before retrying a 429).
    assert messages(checker, exchange(b"", status=429, complete=False)) == []
    assert messages(checker, exchange({"anything": 1}, path="/openai/models")) == []


def test_report_groups_by_exchange(checker: Conformance) -> None:
    broken = exchange(without(without(AZURE_CHAT, "id"), "created"))
    text = report(checker.check(broken))
    assert text.count("POST /openai/deployments/gpt-4/chat/completions") == 1
    assert "'id' is a required property" in text and "'created' is a required" in text


def test_every_deviation_is_documented() -> None:
    docs = (ROOT / "docs" / "conformance.md").read_text()
    section = docs.split("## Documented deviations", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))
    assert documented == {d.id for d in DEVIATIONS}


def test_vendored_specs_are_unmodified() -> None:
    readme = (SPEC_DIR / "README.md").read_text()
    for path in sorted(SPEC_DIR.glob("*.json")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}`" in readme and f"`{digest}`" in readme, path.name


STREAM_BODY = sse(*AZURE_STREAM)


def _upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(STREAM_BODY)
    )


def test_recording_transport_tees_streams() -> None:
    recorder = Recorder()
    recorder.origin = "here"
    transport = RecordingTransport(httpx.MockTransport(_upstream), recorder)
    with httpx.Client(transport=transport, base_url="http://test") as http:
        http.post(CHAT, params={"api-version": "2024-10-21"}, json={})
        with http.stream("POST", CHAT) as response:
            next(response.iter_raw(10))  # a client that leaves early
    whole, partial = recorder.drain()
    assert whole.body == STREAM_BODY and whole.complete and whole.origin == "here"
    assert whole.api_version == "2024-10-21" and whole.path == CHAT
    assert not partial.complete and partial.api_version is None
    assert recorder.drain() == [] and recorder.total == 2


def test_async_recording_transport() -> None:
    recorder = Recorder()

    async def main() -> None:
        transport = AsyncRecordingTransport(httpx.MockTransport(_upstream), recorder)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.post(CHAT, json={})

    asyncio.run(main())
    (recorded,) = recorder.drain()
    assert recorded.body == STREAM_BODY and recorded.complete


def test_the_client_fixture_records_responses(client: TestClient) -> None:
    before = RECORDER.total
    client.get("/healthz")
    assert RECORDER.total == before + 1  # validated when this test ends (tests/conftest.py)


def test_response_hook_records_a_plain_client() -> None:
    recorder = Recorder()
    with httpx.Client(transport=httpx.MockTransport(_upstream), base_url="http://test") as http:
        record_responses(http, recorder)
        http.post(CHAT)
    assert [e.body for e in recorder.drain()] == [STREAM_BODY]


def test_files_and_batches_are_validated_against_openais_schemas() -> None:
    from cerulean.services.batches import batch_object
    from cerulean.services.files import file_object
    from cerulean.store.batches import BatchRecord, FileRecord
    from tests.conformance.validator import Conformance, Exchange

    checker = Conformance()
    record = FileRecord("file-" + "a" * 32, "in.jsonl", "batch", 3, 1, None, "processed")
    batch = BatchRecord("batch_x", record.id, "/chat/completions", "24h", "v1", "validating", 1, 2)

    def check(method: str, path: str, body: object) -> list[str]:
        exchange = Exchange(method, path, None, 200, "application/json", json.dumps(body).encode())
        return [v.message for v in checker.check(exchange)]

    assert check("POST", "/openai/v1/files", file_object(record)) == []
    assert check("GET", "/openai/batches/batch_x", batch_object(batch)) == []
    assert check("POST", "/openai/v1/batches", {**batch_object(batch), "invented": 1})
    assert check("GET", "/openai/files/f", {**file_object(record), "status": "pending"})


def test_openai_deviations_are_documented() -> None:
    from tests.conformance.deviations import OPENAI_DEVIATIONS

    docs = (ROOT / "docs" / "conformance.md").read_text()
    section = docs.split("## Files and Batch: deviations from OpenAI's spec", 1)[1]
    section = section.split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))
    assert documented == {d.id for d in OPENAI_DEVIATIONS}
