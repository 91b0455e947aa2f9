"""The management API (ARM shapes) in-process: auth, api-version, deployments, keys, and the
data plane following it (models loaded on demand, unloaded when undeployed, keys rotated)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.base import Engine
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import ModelRecord
from tests.conftest import KEY1, KEY2

ADMIN = "admin-token-for-tests-0123456789"
ACCOUNT = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.CognitiveServices"
    "/accounts/cerulean"
)
V = "?api-version=2024-10-01"
CHAT = "/openai/deployments/{}/chat/completions?api-version=2024-10-21"
MESSAGE = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}


def deployment_body(model: str = "local", capacity: Any = 10) -> dict[str, Any]:
    return {
        "sku": {"name": "Standard", "capacity": capacity},
        "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}},
    }


class Built:
    def __init__(self) -> None:
        self.engines: list[FakeEngine] = []

    def __call__(self, record: ModelRecord) -> Engine:
        engine = FakeEngine(name=record.name)
        self.engines.append(engine)
        return engine


def start(settings: Settings, built: Built) -> Iterator[TestClient]:
    app = create_app(settings, {"fake-model": FakeEngine()}, engine_factory=built)
    with TestClient(app, raise_server_exceptions=False) as client:
        state: AppState = app.state.cerulean
        assert state.store is not None
        when = datetime.now(timezone.utc)
        state.store.put_model(ModelRecord("local", "/m/local.gguf", ("chat",), 64, None, when))
        yield client


@pytest.fixture
def built() -> Built:
    return Built()


@pytest.fixture
def admin(tmp_path: Path, built: Built) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path / "home",
        admin_token=ADMIN,  # type: ignore[arg-type]
        write_keys_file=True,
    )
    for client in start(settings, built):
        client.headers["authorization"] = f"Bearer {ADMIN}"
        yield client


def keys_of(client: TestClient) -> dict[str, str]:
    answer = client.post(f"{ACCOUNT}/listKeys{V}")
    assert answer.status_code == 200
    body: dict[str, str] = answer.json()
    return body


def chat(client: TestClient, deployment: str, key: str) -> Any:
    return client.post(
        CHAT.format(deployment), json=MESSAGE, headers={"api-key": key, "authorization": ""}
    )


# -- auth, api-version, account -------------------------------------------------------------


def test_disabled_without_an_admin_token(settings: Settings) -> None:
    for client in start(settings, Built()):
        answer = client.get(f"{ACCOUNT}/deployments{V}", headers={"api-key": KEY1})
        assert answer.status_code == 403
        error = answer.json()["error"]
        assert error["code"] == "AuthorizationFailed"
        assert "set CERULEAN_ADMIN_TOKEN" in error["message"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "AuthenticationFailed"),
        ({"authorization": "Basic abc"}, "AuthenticationFailed"),
        ({"authorization": "Bearer wrong"}, "InvalidAuthenticationToken"),
    ],
)
def test_admin_token_required(admin: TestClient, headers: dict[str, str], code: str) -> None:
    del admin.headers["authorization"]
    answer = admin.get(f"{ACCOUNT}/deployments{V}", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code


def test_account_keys_do_not_open_management(admin: TestClient) -> None:
    key = keys_of(admin)["key1"]
    del admin.headers["authorization"]
    for headers in ({"api-key": key}, {"authorization": f"Bearer {key}"}):
        assert admin.get(f"{ACCOUNT}/deployments{V}", headers=headers).status_code == 401


def test_admin_token_does_not_open_the_data_plane(admin: TestClient) -> None:
    answer = admin.post(CHAT.format("gpt-4"), json=MESSAGE)  # Authorization: Bearer <admin>
    assert answer.status_code == 401
    answer = chat(admin, "gpt-4", ADMIN)
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "MissingApiVersionParameter"),
        ("?api-version=2022-12-01", "InvalidApiVersionParameter"),
        ("?api-version=2024-10-21x", "InvalidApiVersionParameter"),
    ],
)
def test_api_version(admin: TestClient, query: str, code: str) -> None:
    answer = admin.get(f"{ACCOUNT}/deployments{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


def test_any_subscription_but_only_our_account(admin: TestClient) -> None:
    other = ACCOUNT.replace("sub-1", "00000000-aaaa").replace("rg-1", "another")
    assert admin.get(f"{other}/deployments{V}").status_code == 200
    answer = admin.get(f"{ACCOUNT.replace('cerulean', 'elsewhere')}/deployments{V}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "ResourceNotFound"
    assert "accounts/elsewhere" in answer.json()["error"]["message"]


# -- deployments ----------------------------------------------------------------------------


def test_create_get_list_update_delete(admin: TestClient) -> None:
    url = f"{ACCOUNT}/deployments/my-dep{V}"
    created = admin.put(url, json=deployment_body(capacity="20"))  # capacity as a string: lenient
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == f"{ACCOUNT}/deployments/my-dep"
    assert body["name"] == "my-dep"
    assert body["sku"] == {"name": "Standard", "capacity": 20}
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert body["properties"]["rateLimits"][1] == {
        "key": "token",
        "renewalPeriod": 60,
        "count": 20000,
    }
    assert admin.get(url).json() == body
    names = [d["name"] for d in admin.get(f"{ACCOUNT}/deployments{V}").json()["value"]]
    assert names == ["gpt-35-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini", "my-dep"]
    updated = admin.put(url, json=deployment_body(capacity=30))
    assert updated.status_code == 200
    assert updated.json()["sku"]["capacity"] == 30
    assert admin.delete(url).status_code == 200
    assert admin.delete(url).status_code == 204
    missing = admin.get(url)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "DeploymentNotFound"


def test_names_are_case_insensitive_like_azure_resources(admin: TestClient) -> None:
    key = keys_of(admin)["key1"]
    assert (
        admin.put(f"{ACCOUNT}/deployments/lim1{V}", json=deployment_body(capacity=1)).status_code
        == 201
    )
    again = admin.put(f"{ACCOUNT}/deployments/LIM1{V}", json=deployment_body(capacity=2))
    assert again.status_code == 200, again.text  # updated, not created
    assert again.json()["name"] == "lim1" and again.json()["sku"]["capacity"] == 2
    names = [d["name"] for d in admin.get(f"{ACCOUNT}/deployments{V}").json()["value"]]
    assert names.count("lim1") == 1 and "LIM1" not in names
    assert admin.get(f"{ACCOUNT}/deployments/Lim1{V}").json()["name"] == "lim1"
    # One budget: capacity 2 admits two requests per 10 s, whichever spelling was PUT.
    assert [chat(admin, "lim1", key).status_code for _ in range(3)] == [200, 200, 429]
    # The data plane matches the stored spelling exactly (docs/deployments.md).
    assert chat(admin, "LIM1", key).json()["error"]["code"] == "DeploymentNotFound"
    assert admin.delete(f"{ACCOUNT}/deployments/LIM1{V}").status_code == 200
    assert admin.get(f"{ACCOUNT}/deployments/lim1{V}").status_code == 404


def test_legacy_scale_settings_capacity(admin: TestClient) -> None:
    body = {"properties": {"model": {"name": "local"}, "scaleSettings": {"capacity": 3}}}
    answer = admin.put(f"{ACCOUNT}/deployments/legacy{V}", json=body)
    assert answer.status_code == 201
    assert answer.json()["sku"] == {"name": "Standard", "capacity": 3}


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("ok-name", deployment_body(model="nope"), 400, "DeploymentModelNotSupported"),
        ("x", deployment_body(), 400, "InvalidResourceName"),
        ("ok-name", deployment_body(capacity=0), 400, "InvalidCapacity"),
        ("ok-name", {"sku": {"name": "Standard"}}, 400, "InvalidRequestContent"),
        ("ok-name", {**deployment_body(), "sku": {"name": "Provisioned"}}, 400, "InvalidSkuName"),
    ],
)
def test_put_refusals(
    admin: TestClient, name: str, body: dict[str, Any], status: int, code: str
) -> None:
    answer = admin.put(f"{ACCOUNT}/deployments/{name}{V}", json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert admin.get(f"{ACCOUNT}/deployments/{name}{V}").status_code == 404


def test_put_refuses_bad_json(admin: TestClient) -> None:
    answer = admin.put(f"{ACCOUNT}/deployments/ok-name{V}", content=b"{nope")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InvalidRequestContent"


def test_deployment_serves_at_once_and_unloads_when_deleted(
    admin: TestClient, built: Built
) -> None:
    key = keys_of(admin)["key1"]
    assert admin.put(f"{ACCOUNT}/deployments/mine{V}", json=deployment_body()).status_code == 201
    answer = chat(admin, "mine", key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "local"
    assert answer.headers["x-ratelimit-limit-tokens"] == "10000"
    assert len(built.engines) == 1 and built.engines[0].ready
    assert admin.delete(f"{ACCOUNT}/deployments/mine{V}").status_code == 200
    state: AppState = admin.app.state.cerulean  # type: ignore[attr-defined]
    assert state.pool is not None and "local" not in state.engines
    assert state.pool.draining == {"local"}
    assert chat(admin, "mine", key).status_code == 404


# -- keys -----------------------------------------------------------------------------------


def test_list_and_regenerate_keys(admin: TestClient) -> None:
    before = keys_of(admin)
    assert set(before) == {"key1", "key2"} and before["key1"] != before["key2"]
    answer = admin.post(f"{ACCOUNT}/regenerateKey{V}", json={"keyName": "Key1"})
    assert answer.status_code == 200
    after = answer.json()
    assert after["key2"] == before["key2"] and after["key1"] != before["key1"]
    assert keys_of(admin) == after
    assert chat(admin, "gpt-4", after["key1"]).status_code == 200
    assert chat(admin, "gpt-4", after["key2"]).status_code == 200
    refused = chat(admin, "gpt-4", before["key1"])  # at once: no wait for the key cache
    assert refused.status_code == 401


@pytest.mark.parametrize("body", [{"keyName": "Key3"}, {}, {"keyName": 1}])
def test_regenerate_refuses_bad_names(admin: TestClient, body: dict[str, Any]) -> None:
    answer = admin.post(f"{ACCOUNT}/regenerateKey{V}", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InvalidRequestContent"


def test_pinned_keys_cannot_be_regenerated(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        key1=KEY1,  # type: ignore[arg-type]
        key2=KEY2,  # type: ignore[arg-type]
        admin_token=ADMIN,  # type: ignore[arg-type]
    )
    for client in start(settings, Built()):
        client.headers["authorization"] = f"Bearer {ADMIN}"
        assert keys_of(client) == {"key1": KEY1, "key2": KEY2}
        answer = client.post(f"{ACCOUNT}/regenerateKey{V}", json={"keyName": "Key2"})
        assert answer.status_code == 409
        assert "CERULEAN_KEY2" in answer.json()["error"]["message"]


def test_keys_changed_by_another_process(tmp_path: Path) -> None:
    import time

    from cerulean.services.auth import hash_key

    settings = Settings(home=tmp_path / "home", key_cache_seconds=0.3)  # type: ignore[arg-type]
    for client in start(settings, Built()):
        state: AppState = client.app.state.cerulean  # type: ignore[attr-defined]
        assert state.store is not None
        old = state.shown_keys["key1"]
        assert chat(client, "gpt-4", old).status_code == 200
        new = "c" * 32
        state.store.set_key_digest("key1", hash_key(new))  # as `cerulean keys regenerate` does
        assert chat(client, "gpt-4", new).status_code == 200  # a failed key re-reads at once
        time.sleep(0.35)
        assert chat(client, "gpt-4", old).status_code == 401  # gone within key_cache_seconds
        assert chat(client, "gpt-4", state.shown_keys["key2"]).status_code == 200


def test_capabilities_do_not_flip_between_the_server_and_the_cli(tmp_path: Path) -> None:
    """One vocabulary for the capabilities column (issue 10, defect 1): the ARM deployment of
    the embedded model shows chatCompletion and completion right after the server starts,
    after a CLI command has rewritten the catalog, and after the next start."""
    from click.testing import CliRunner

    from cerulean.cli import main
    from cerulean.packaged import EMBEDDED_MODEL_NAME

    home = tmp_path / "home"
    settings = Settings(home=home, admin_token=ADMIN)  # type: ignore[arg-type]
    expected = {"chatCompletion": "true", "completion": "true"}

    def arm_capabilities() -> dict[str, str]:
        engine = FakeEngine(name=EMBEDDED_MODEL_NAME)
        with TestClient(create_app(settings, {EMBEDDED_MODEL_NAME: engine})) as client:
            client.headers["authorization"] = f"Bearer {ADMIN}"
            answer = client.get(f"{ACCOUNT}/deployments/gpt-35-turbo{V}")
            assert answer.status_code == 200, answer.text
            capabilities: dict[str, str] = answer.json()["properties"]["capabilities"]
            return capabilities

    assert arm_capabilities() == expected
    listed = CliRunner().invoke(main, ["deployments", "list", "--home", str(home)])
    assert listed.exit_code == 0, listed.output
    assert arm_capabilities() == expected
