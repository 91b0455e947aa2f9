"""The embeddings route in-process (TestClient + FakeEngine + FakeEmbedder): shapes, errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.engines.fake_embeddings import FakeEmbedder
from cerulean.settings import Settings
from tests.conftest import KEY1

URL = "/openai/deployments/text-embedding-ada-002/embeddings?api-version=2024-10-21"
CHAT_URL = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
LINK = "https://go.microsoft.com/fwlink/?linkid=2197993."


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def app_client(settings: Settings, embedder: FakeEmbedder) -> Iterator[TestClient]:
    app = create_app(
        settings, {"fake-model": FakeEngine()}, embedders={embedder.info.name: embedder}
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["api-key"] = KEY1
        yield test_client


def error_of(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body  # Azure's envelope, never FastAPI's {"detail": ...}
    error: dict[str, Any] = body["error"]
    return error


def test_single_string_shape(app_client: TestClient) -> None:
    response = app_client.post(URL, json={"input": "hello there world"})
    assert response.status_code == 200
    assert response.headers["x-ms-deployment-name"] == "text-embedding-ada-002"
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "fake-embedder"
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert len(item["embedding"]) == 8
    assert abs(float(np.linalg.norm(item["embedding"])) - 1) < 1e-6


def test_array_of_strings_in_order(app_client: TestClient) -> None:
    texts = ["one", "two words", "three little words"]
    body = app_client.post(URL, json={"input": texts, "encoding_format": "float"}).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    singles = [app_client.post(URL, json={"input": t}).json()["data"][0] for t in texts]
    assert [d["embedding"] for d in body["data"]] == [s["embedding"] for s in singles]
    assert body["usage"]["prompt_tokens"] == (1 + 2) + (2 + 2) + (3 + 2)


def test_base64_is_little_endian_float32(app_client: TestClient) -> None:
    floats = app_client.post(URL, json={"input": "a b"}).json()["data"][0]["embedding"]
    encoded = app_client.post(URL, json={"input": "a b", "encoding_format": "base64"}).json()
    text = encoded["data"][0]["embedding"]
    assert isinstance(text, str)
    decoded = np.frombuffer(base64.b64decode(text), dtype="<f4")
    assert decoded.tolist() == pytest.approx(floats, abs=0)


def test_token_arrays_are_cl100k_ids(app_client: TestClient, embedder: FakeEmbedder) -> None:
    # ada-002 reads tiktoken's cl100k_base: [15339, 1917] is "hello world" there.
    one = app_client.post(URL, json={"input": [15339, 1917]}).json()
    assert embedder.calls[-1] == ["hello world"]
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 4
    text = app_client.post(URL, json={"input": "hello world"}).json()
    assert one["data"][0]["embedding"] == text["data"][0]["embedding"]
    many = app_client.post(URL, json={"input": [[15339, 1917], [15339]]}).json()
    assert len(many["data"]) == 2 and embedder.calls[-1] == ["hello world", "hello"]


def test_dimensions_equal_to_the_model_is_accepted(app_client: TestClient) -> None:
    response = app_client.post(URL, json={"input": "x", "dimensions": 8})
    assert response.status_code == 200


def test_dimensions_the_model_cannot_give(app_client: TestClient) -> None:
    error = error_of(app_client.post(URL, json={"input": "x", "dimensions": 4}))
    assert error["message"].startswith("This model does not support specifying dimensions")
    assert error["param"] == "dimensions" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("value", "message", "param"),
    [
        ("", "'' is too short - 'input'", "input"),
        ([], "[] is too short - 'input'", "input"),
        (["a", ""], "'' is too short - 'input.1'", "input"),
        ([[1, 2], []], "[] is too short - 'input.1'", "input"),
        (["x"] * 2049, "is too long - 'input'", "input"),
        (5, "5 is not of type 'string' - 'input'", "input"),
        ([1.5], "is not of type", "input"),
        (["a", 1], "is not of type", "input"),
    ],
)
def test_bad_input(app_client: TestClient, value: Any, message: str, param: str) -> None:
    error = error_of(app_client.post(URL, json={"input": value}))
    assert message in error["message"]
    assert error["param"] is not None and error["param"].startswith(param)


def test_missing_input(app_client: TestClient) -> None:
    error = error_of(app_client.post(URL, json={"encoding_format": "float"}))
    assert error["message"] == "'input' is a required property"


def test_bad_encoding_format(app_client: TestClient) -> None:
    error = error_of(app_client.post(URL, json={"input": "x", "encoding_format": "int8"}))
    assert error["param"] == "encoding_format"


def test_too_long_input(app_client: TestClient) -> None:
    error = error_of(app_client.post(URL, json={"input": "w " * 20}))
    assert error["message"] == (
        "This model's maximum context length is 16 tokens, however you requested 22 tokens "
        "(22 in your prompt; 0 for the completion). Please reduce your prompt; or completion "
        "length."
    )
    assert error["type"] == "invalid_request_error" and error["code"] is None


def test_token_out_of_vocabulary(app_client: TestClient) -> None:
    error = error_of(app_client.post(URL, json={"input": [[1, 2], [3, 100256]]}))
    assert error["message"].startswith("Invalid token id 100256 in input[1]")
    assert "cl100k_base" in error["message"] and error["param"] == "input"
    assert "-1" in error_of(app_client.post(URL, json={"input": [-1]}))["message"]
    assert "200000" in error_of(app_client.post(URL, json={"input": [200000]}))["message"]


def test_embeddings_on_a_chat_deployment(app_client: TestClient) -> None:
    url = "/openai/deployments/gpt-35-turbo/embeddings?api-version=2024-10-21"
    error = error_of(app_client.post(url, json={"input": "hello"}))
    assert error == {
        "code": "OperationNotSupported",
        "message": "The embeddings operation does not work with the specified model, "
        "fake-model. Please choose different model and try again. You can learn more about "
        f"which models can be used with each operation here: {LINK}",
    }


def test_chat_on_an_embeddings_deployment(app_client: TestClient) -> None:
    url = "/openai/deployments/text-embedding-ada-002/chat/completions?api-version=2024-10-21"
    error = error_of(app_client.post(url, json={"messages": [{"role": "user", "content": "hi"}]}))
    assert error["code"] == "OperationNotSupported"
    assert error["message"].startswith(
        "The chatCompletion operation does not work with the specified model, fake-embedder."
    )


def test_chat_still_works_beside_embeddings(app_client: TestClient) -> None:
    response = app_client.post(CHAT_URL, json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200


def test_unknown_deployment_and_missing_version(app_client: TestClient) -> None:
    url = "/openai/deployments/nope/embeddings?api-version=2024-10-21"
    assert error_of(app_client.post(url, json={"input": "x"}), 404)["code"] == "DeploymentNotFound"
    no_version = "/openai/deployments/text-embedding-ada-002/embeddings"
    assert error_of(app_client.post(no_version, json={"input": "x"}), 404)["code"] == "404"


def test_needs_a_key(app_client: TestClient) -> None:
    response = app_client.post(URL, json={"input": "x"}, headers={"api-key": "wrong"})
    assert error_of(response, 401)["code"] == "401"


def test_old_api_version_and_extra_fields(app_client: TestClient) -> None:
    # 0.28.1 sends encoding_format with 2023-05-15; LangChain sends model and user.
    old = URL.replace("2024-10-21", "2023-05-15")
    body = {"input": ["a"], "encoding_format": "base64", "model": "x", "user": "u"}
    response = app_client.post(old, json={**body, "input_type": "query"})
    assert response.status_code == 200
    assert isinstance(response.json()["data"][0]["embedding"], str)


def test_bad_json(app_client: TestClient) -> None:
    response = app_client.post(URL, content=b"{nope", headers={"content-type": "application/json"})
    assert "could not parse the JSON body" in error_of(response)["message"]


def test_health_waits_for_the_embedder(settings: Settings) -> None:
    class Slow(FakeEmbedder):
        def load(self) -> None:
            pass  # never becomes ready

    app = create_app(settings, {"fake-model": FakeEngine()}, embedders={"slow": Slow()})
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 503
        client.headers["api-key"] = KEY1
        response = client.post(URL, json={"input": "x"})
        assert error_of(response, 503)["code"] == "ServiceUnavailable"


def test_v1_embeddings_and_listing(app_client: TestClient) -> None:
    body = {"model": "text-embedding-ada-002", "input": "hello"}
    response = app_client.post("/openai/v1/embeddings", json=body)
    assert response.status_code == 200
    assert response.json()["data"][0]["object"] == "embedding"
    assert "x-ratelimit-remaining-tokens" in response.headers
    models = app_client.get("/openai/models?api-version=2024-10-21").json()["data"]
    kinds = {m["id"]: m["capabilities"] for m in models}
    assert kinds["fake-embedder"]["embeddings"] is True
    assert kinds["fake-embedder"]["chat_completion"] is False
    assert kinds["fake-model"]["chat_completion"] is True


def test_embedding_arguments_by_version(app_client: TestClient) -> None:
    old = URL.replace("2024-10-21", "2024-02-01")
    # encoding_format is sent by both SDKs whatever the version; dimensions came in 2024-03.
    assert app_client.post(old, json={"input": "x", "encoding_format": "base64"}).status_code == 200
    refused = error_of(app_client.post(old, json={"input": "x", "dimensions": 8}))
    assert refused["message"] == "Unrecognized request argument supplied: dimensions"


def test_completions_on_an_embeddings_deployment(app_client: TestClient) -> None:
    url = URL.replace("/embeddings?", "/completions?")
    error = error_of(app_client.post(url, json={"prompt": "hi"}))
    assert error["code"] == "OperationNotSupported"
    assert error["message"].startswith(
        "The completion operation does not work with the specified model, fake-embedder."
    )
