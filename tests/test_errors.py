from __future__ import annotations

from cerulean.errors import (
    ContextLengthExceeded,
    DeploymentNotFound,
    InternalServerError,
    InvalidSubscriptionKey,
    MissingCredentials,
    RateLimited,
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


def test_rate_limited_follows_azures_template() -> None:
    err = RateLimited(
        operation="ChatCompletions_Create",
        api_version="2024-02-15-preview",
        limit="token",
        retry_after=59.2,
    )
    assert err.status_code == 429
    assert err.body() == {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            "version 2024-02-15-preview have exceeded token rate limit of your current OpenAI S0 "
            "pricing tier. Please retry after 60 seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
            "rate limit.",
        }
    }
    assert err.headers == {"retry-after": "60", "retry-after-ms": "59200"}


def test_rate_limited_call_limit_rounds_up_to_one_second() -> None:
    err = RateLimited(
        operation="Embeddings_Create", api_version="2024-10-21", limit="call", retry_after=0.0004
    )
    assert "exceeded call rate limit" in err.message
    assert "Please retry after 1 second. " in err.message
    assert err.headers == {"retry-after": "1", "retry-after-ms": "1"}


def test_rate_limited_beyond_any_wait_tells_clients_not_to_retry() -> None:
    err = RateLimited(
        operation="Completions_Create",
        api_version="2024-10-21",
        limit="token",
        retry_after=60,
        retryable=False,
    )
    assert "Please retry" not in err.message
    assert err.message.endswith("further increase the default rate limit.")
    assert err.headers["x-should-retry"] == "false"
