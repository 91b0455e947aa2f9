"""The HTTP layer in-process (TestClient + FakeEngine): routes, auth, errors, shapes, SSE."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cerulean.engines.fake import FakeEngine
from tests.conftest import KEY2

URL = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
OLD_URL = "/openai/deployments/gpt-4/chat/completions?api-version=2023-05-15"
BODY = {"messages": [{"role": "user", "content": "hello there"}]}
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: ") :] for e in events]


def test_completion_shape_with_annotations(client: TestClient) -> None:
    response = client.post(URL, json=BODY)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == 38
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "You said: hello there",
        "refusal": None,
    }
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    # No harm classifier in this app (no embedding model): the categories are not evaluated,
    # so the answer says so (never "safe"); the prompt shield did run on the prompt.
    assert choice["content_filter_results"] == {
        "error": {"code": "content_filter_error", "message": "The contents are not filtered"}
    }
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["prompt_filter_results"][0]["content_filter_results"] == {
        "jailbreak": {"filtered": False, "detected": False}
    }
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_2023_05_15_has_no_annotations(client: TestClient) -> None:
    body = client.post(OLD_URL, json=BODY).json()
    assert "prompt_filter_results" not in body
    assert "content_filter_results" not in body["choices"][0]


def test_headers(client: TestClient) -> None:
    response = client.post(URL, json=BODY, headers={"x-ms-client-request-id": "mine-1"})
    headers = response.headers
    assert headers["apim-request-id"] and headers["x-request-id"] == headers["apim-request-id"]
    assert headers["x-ms-client-request-id"] == "mine-1"
    assert headers["x-ms-region"] == "local"
    assert headers["x-ms-deployment-name"] == "gpt-35-turbo"
    assert float(headers["openai-processing-ms"]) >= 0


def test_stream_framing(client: TestClient) -> None:
    response = client.post(URL, json={**BODY, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"] == [] and chunks[0]["id"] == "" and chunks[0]["created"] == 0
    assert "prompt_filter_results" in chunks[0]
    assert chunks[1]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == "You said: hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert len({c["id"] for c in chunks[1:]}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[1:])


def test_stream_include_usage(client: TestClient) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in sse_events(client.post(URL, json=body).text)[:-1]]
    assert all(c["usage"] is None for c in chunks[1:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


def test_old_version_stream_has_no_prompt_filter_chunk(client: TestClient) -> None:
    events = sse_events(client.post(OLD_URL, json={**BODY, "stream": True}).text)
    first = json.loads(events[0])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_length_finish_reason(client: TestClient) -> None:
    body = client.post(URL, json={**BODY, "max_tokens": 1}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize(
    "path", [URL.replace("/deployments", "//deployments"), URL.replace("/chat/", "///chat//")]
)
def test_duplicate_slashes_are_collapsed(client: TestClient, path: str) -> None:
    # A leading "//" is covered by the real-socket tests: httpx reads it as a host name.
    assert client.post(path, json=BODY).status_code == 200


def test_bearer_and_key2_accepted(client: TestClient) -> None:
    headers = {"api-key": "", "authorization": f"Bearer {KEY2}"}
    del client.headers["api-key"]
    assert (
        client.post(URL, json=BODY, headers={"authorization": f"Bearer {KEY2}"}).status_code == 200
    )
    assert client.post(URL, json=BODY, headers={"api-key": KEY2}).status_code == 200
    # api-key wins: an empty/wrong api-key is refused even with a good bearer.
    assert client.post(URL, json=BODY, headers=headers).status_code == 401


def test_wrong_key(client: TestClient) -> None:
    response = client.post(URL, json=BODY, headers={"api-key": "nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"
    assert response.json()["error"]["message"].startswith(
        "Access denied due to invalid subscription key"
    )


def test_no_key(client: TestClient) -> None:
    del client.headers["api-key"]
    response = client.post(URL, json=BODY)
    assert response.status_code == 401
    assert response.json() == {
        "statusCode": 401,
        "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
        "(https://cognitiveservices.azure.com), or have expired.",
    }
    assert response.headers["apim-request-id"]


def test_unknown_routes_need_a_key_then_404(client: TestClient) -> None:
    assert client.get("/nothing-here").json() == NOT_FOUND
    assert (
        client.get("/openai/deployments/gpt-4/chat/completions?api-version=2024-10-21").json()
        == NOT_FOUND
    )
    del client.headers["api-key"]
    assert client.get("/nothing-here").status_code == 401


@pytest.mark.parametrize(
    "query", ["", "?api-version=", "?api-version=2023-12-01", "?api-version=v1"]
)
def test_missing_or_unknown_api_version(client: TestClient, query: str) -> None:
    response = client.post("/openai/deployments/gpt-4/chat/completions" + query, json=BODY)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_unknown_deployment(client: TestClient) -> None:
    response = client.post(URL.replace("gpt-35-turbo", "nope"), json=BODY)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DeploymentNotFound"


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 400, "could not parse the JSON body"),
        (b"", 400, "could not parse the JSON body"),
        (b"\xff\xfe", 400, "could not parse the JSON body"),
        (b'"a string"', 400, "is not of type 'object'"),
        (b'{"messages": "hi"}', 400, "is not of type 'array' - 'messages'"),
        (b'{"messages":[{"role":"user","content":1}]}', 400, "messages.0.content"),
        (b'{"messages":[{"role":"user","content":"x"}],"n":0}', 400, "'n'"),
        (
            b'{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}',
            400,
            "Supported values",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],'
            b'"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}',
            400,
            "json_schema.name",
        ),
        (b'{"messages":[{"role":"user","content":"x"}],"logit_bias":{"a":1}}', 400, "logit_bias"),
        (
            '{"messages":[{"role":"user","content":"x"}],"logit_bias":{"²":1}}'.encode(),
            400,
            "logit",
        ),
        (b'{"messages":[{"role":"user","content":"x"}],"logit_bias":{"5":101}}', 400, "-100"),
        (b'{"messages":[{"role":"user","content":"x"}],"n":129}', 400, "'n'"),
        (
            b'{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}',
            400,
            "'tools.0'",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}',
            400,
            "'stop'",
        ),
        (
            b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}',
            400,
            "text only",
        ),
    ],
)
def test_bad_bodies_get_azure_400s(
    client: TestClient, content: bytes, status: int, fragment: str
) -> None:
    response = client.post(URL, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert "detail" not in response.json()


def test_text_parts_are_joined(client: TestClient) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    }
    assert (
        client.post(URL, json=body).json()["choices"][0]["message"]["content"] == "You said: a\nb"
    )


def test_huge_body_is_413(client: TestClient, settings: object) -> None:
    big = b'{"messages":[{"role":"user","content":"' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    response = client.post(URL, content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_body_too_large"


def test_context_length_exceeded(client: TestClient) -> None:
    words = " ".join(["word"] * 100)
    response = client.post(URL, json={"messages": [{"role": "user", "content": words}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 64 tokens" in error["message"]
    streamed = client.post(
        URL, json={"messages": [{"role": "user", "content": words}], "stream": True}
    )
    assert (
        streamed.status_code == 400
        and streamed.json()["error"]["code"] == "context_length_exceeded"
    )


def test_engine_crash_is_azure_500_and_server_survives(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    def boom(_request: object) -> list[str]:
        raise RuntimeError("native failure")

    original = fake_engine._handler
    fake_engine._handler = boom
    response = client.post(URL, json=BODY)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert response.headers["apim-request-id"] in error["message"]
    fake_engine._handler = original
    assert client.post(URL, json=BODY).status_code == 200


def test_healthz_is_public(client: TestClient) -> None:
    del client.headers["api-key"]
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_no_fastapi_detail_anywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/docs"),
        ("PUT", URL),
        ("DELETE", "/healthz"),
        ("GET", "/openapi.json/x"),
    ]:
        response = client.request(method, path)
        assert "detail" not in response.json()


def test_n_gives_one_choice_per_answer_and_sums_usage(client: TestClient) -> None:
    body = client.post(URL, json={**BODY, "n": 3}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "You said: hello there" for c in body["choices"])
    one = client.post(URL, json=BODY).json()["usage"]
    assert body["usage"]["prompt_tokens"] == one["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 3 * one["completion_tokens"]


def test_n_streams_every_choice_with_its_index(client: TestClient) -> None:
    body = {**BODY, "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in sse_events(client.post(URL, json=body).text)[:-1]]
    content: dict[int, str] = {}
    finished = set()
    for chunk in chunks:
        for choice in chunk["choices"]:
            content[choice["index"]] = content.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert content == {0: "You said: hello there", 1: "You said: hello there"}
    assert finished == {0, 1}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_logit_bias_with_token_ids_is_accepted(client: TestClient) -> None:
    response = client.post(URL, json={**BODY, "logit_bias": {"50256": -100, "7": 5}})
    assert response.status_code == 200


def test_response_format_json_object_is_accepted(client: TestClient) -> None:
    messages = [{"role": "user", "content": "hello there, in json"}]
    body = {"messages": messages, "response_format": {"type": "json_object"}}
    assert client.post(URL, json=body).status_code == 200
