"""The listing routes and the /openai/v1 surface."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import KEY1

NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}


def test_models_list(client: TestClient) -> None:
    body = client.get("/openai/models?api-version=2024-10-21").json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "fake-model" and model["object"] == "model"
    assert model["status"] == "succeeded" and model["lifecycle_status"] == "generally-available"
    assert model["capabilities"]["chat_completion"] is True
    assert model["capabilities"]["embeddings"] is False
    assert client.get("/openai/models/fake-model?api-version=2024-10-21").json() == model


def test_models_old_shape(client: TestClient) -> None:
    (model,) = client.get("/openai/models?api-version=2022-12-01").json()["data"]
    assert "chat_completion" not in model["capabilities"]
    assert model["capabilities"]["scale_types"] == ["standard"] and "updated_at" in model


def test_unknown_model_and_missing_version(client: TestClient) -> None:
    response = client.get("/openai/models/nope?api-version=2024-10-21")
    assert response.status_code == 404 and response.json() == NOT_FOUND
    assert client.get("/openai/models").status_code == 404


def test_deployment_scoped_models_alias(client: TestClient) -> None:
    url = "/openai/deployments/gpt-4/models?api-version=2024-02-01"
    assert client.get(url).json()["data"][0]["id"] == "fake-model"


def test_deployments_only_on_old_versions(client: TestClient) -> None:
    body = client.get("/openai/deployments?api-version=2022-12-01").json()
    names = {d["id"] for d in body["data"]}
    assert {"gpt-35-turbo", "gpt-4"} <= names
    one = client.get("/openai/deployments/gpt-4?api-version=2023-03-15-preview").json()
    assert one["object"] == "deployment" and one["model"] == "fake-model"
    assert one["status"] == "succeeded" and one["scale_settings"]["scale_type"] == "standard"
    missing = client.get("/openai/deployments/nope?api-version=2022-12-01")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DeploymentNotFound"
    for url in (
        "/openai/deployments?api-version=2024-10-21",
        "/openai/deployments/gpt-4?api-version=2024-10-21",
    ):
        response = client.get(url)
        assert response.status_code == 404 and response.json() == NOT_FOUND


def test_listing_needs_a_key(client: TestClient) -> None:
    del client.headers["api-key"]
    assert client.get("/openai/models?api-version=2024-10-21").status_code == 401


V1 = "/openai/v1/chat/completions"
ASK = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}


def test_v1_chat_with_bearer(client: TestClient) -> None:
    del client.headers["api-key"]
    response = client.post(V1, json=ASK, headers={"Authorization": f"Bearer {KEY1}"})
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "You said: hi"
    assert response.headers["x-ms-deployment-name"] == "gpt-4"
    assert "prompt_filter_results" in body


@pytest.mark.parametrize("version", ["v1", "preview"])
def test_v1_versions(client: TestClient, version: str) -> None:
    assert client.post(f"{V1}?api-version={version}", json=ASK).status_code == 200


def test_v1_refuses_dated_versions(client: TestClient) -> None:
    response = client.post(f"{V1}?api-version=2024-10-21", json=ASK)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "BadRequest", "message": "API version not supported"}
    }


def test_v1_model_is_the_deployment(client: TestClient) -> None:
    missing = client.post(V1, json={"messages": ASK["messages"]})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unknown = client.post(V1, json={**ASK, "model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "DeploymentNotFound"


def test_v1_models(client: TestClient) -> None:
    (model,) = client.get("/openai/v1/models").json()["data"]
    assert model["id"] == "fake-model" and model["owned_by"] == "system"
    assert isinstance(model["created"], int)


def test_trailing_slash_is_served_never_redirected_to_the_host_header(
    client: TestClient,
) -> None:
    url = "/openai/models/?api-version=2024-10-21"
    answer = client.get(url, headers={"host": "evil.example"}, follow_redirects=False)
    assert "location" not in answer.headers
    assert answer.status_code == 200 and answer.json()["data"][0]["id"] == "fake-model"
    chat = client.post(
        "/openai/deployments/gpt-4/chat/completions/?api-version=2024-10-21",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"host": "evil.example"},
        follow_redirects=False,
    )
    assert chat.status_code == 200 and "location" not in chat.headers
    assert client.get("/healthz/", follow_redirects=False).status_code == 200
