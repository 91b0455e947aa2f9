"""api-version rules: unknown and too-new arguments, roles and formats per version."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

ASK = [{"role": "user", "content": "hi"}]


def _url(version: str) -> str:
    return f"/openai/deployments/gpt-35-turbo/chat/completions?api-version={version}"


@pytest.mark.parametrize(
    ("version", "extra", "unknown"),
    [
        ("2023-05-15", {"functions": [{"name": "f"}]}, "functions"),
        ("2023-05-15", {"seed": 1}, "seed"),
        ("2023-05-15", {"tools": []}, "tools"),
        ("2024-02-01", {"logprobs": True}, "logprobs"),
        ("2024-06-01", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("2024-06-01", {"max_completion_tokens": 5}, "max_completion_tokens"),
        ("2024-10-21", {"temprature": 1}, "temprature"),
        ("2024-10-21", {"reasoning_effort": "low"}, "reasoning_effort"),
    ],
)
def test_unrecognized_argument(
    client: TestClient, version: str, extra: dict[str, object], unknown: str
) -> None:
    response = client.post(_url(version), json={"messages": ASK, **extra})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": f"Unrecognized request argument supplied: {unknown}",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_several_unrecognized_arguments_in_order(client: TestClient) -> None:
    body = {"messages": ASK, "topP": 1, "frequencyPenalty": 0, "presencePenalty": 0}
    response = client.post(_url("2023-05-15"), json=body)
    message = response.json()["error"]["message"]
    assert message == (
        "Unrecognized request arguments supplied: topP, frequencyPenalty, presencePenalty"
    )


def test_model_is_accepted_everywhere(client: TestClient) -> None:
    assert client.post(_url("2023-05-15"), json={"messages": ASK, "model": "x"}).status_code == 200


def test_newer_version_knows_the_argument(client: TestClient) -> None:
    body = {"messages": ASK, "max_completion_tokens": 5, "stream_options": None}
    assert client.post(_url("2024-10-21"), json=body).status_code == 200


def test_known_but_unsupported_argument(client: TestClient) -> None:
    body = {"messages": ASK, "data_sources": [{"type": "azure_search", "parameters": {}}]}
    response = client.post(_url("2024-10-21"), json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == "data_sources"
    ok = client.post(_url("2024-12-01-preview"), json={"messages": ASK, "store": False})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("version", "role"),
    [("2023-05-15", "function"), ("2023-07-01-preview", "tool"), ("2024-10-21", "developer")],
)
def test_roles_per_version(client: TestClient, version: str, role: str) -> None:
    message = {"role": role, "content": "x", "name": "f", "tool_call_id": "c"}
    response = client.post(_url(version), json={"messages": [message, *ASK]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.role"
    assert error["message"].startswith(f"'{role}' is not one of [")


def test_json_schema_needs_2024_08_01(client: TestClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    body = {"messages": [{"role": "user", "content": "json"}], "response_format": fmt}
    old = client.post(_url("2024-06-01"), json=body)
    assert old.status_code == 400 and old.json()["error"]["param"] == "response_format.type"
    assert client.post(_url("2024-10-21"), json=body).status_code == 200


def test_json_object_needs_the_word_json(client: TestClient) -> None:
    body = {"messages": ASK, "response_format": {"type": "json_object"}}
    response = client.post(_url("2024-10-21"), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
        "'json_object'."
    )
    body["messages"] = [{"role": "user", "content": "Answer in JSON."}]
    assert client.post(_url("2024-10-21"), json=body).status_code == 200
