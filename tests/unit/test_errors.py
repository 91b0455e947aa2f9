from __future__ import annotations

from cerulean.errors import (
    ContextLengthExceeded,
    DeploymentNotFound,
    InternalServerError,
    InvalidSubscriptionKey,
    MissingCredentials,
    ResourceNotFound,
)


def test_resource_not_found_body() -> None:
    err = ResourceNotFound()
    assert err.status_code == 404
    assert err.body() == {"error": {"code": "404", "message": "Resource not found"}}


def test_deployment_not_found_body() -> None:
    body = DeploymentNotFound().body()
    assert body["error"]["code"] == "DeploymentNotFound"
    assert body["error"]["message"].startswith(
        "The API deployment for this resource does not exist."
    )


def test_auth_bodies() -> None:
    assert InvalidSubscriptionKey().body()["error"]["code"] == "401"
    apim = MissingCredentials().body()
    assert apim["statusCode"] == 401 and "error" not in apim


def test_context_length_messages_carry_the_numbers() -> None:
    with_completion = ContextLengthExceeded(limit=4096, prompt_tokens=4000, completion_tokens=200)
    assert (
        "you requested 4200 tokens (4000 in the messages, 200 in the completion)"
        in with_completion.message
    )
    alone = ContextLengthExceeded(limit=4096, prompt_tokens=5000, completion_tokens=None)
    assert "your messages resulted in 5000 tokens" in alone.message
    assert alone.body()["error"]["code"] == "context_length_exceeded"
    assert alone.body()["error"]["param"] == "messages"


def test_server_error_quotes_request_id() -> None:
    body = InternalServerError("abc-123").body()
    assert "abc-123" in body["error"]["message"] and body["error"]["type"] == "server_error"
