"""The control plane against a real server: the CLI (separate processes sharing the store) and
Microsoft's own management SDK (azure-mgmt-cognitiveservices), with openai 1.x on the data plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import (
    Deployment,
    DeploymentModel,
    DeploymentProperties,
    Sku,
)
from openai import AzureOpenAI

from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "e2e-admin-token-5b0c1f7e9a8d4c3b"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "my-resource-group"
HTTP = {"enforce_https": False}  # azure-core sends bearer tokens over https only, unless told


class StaticToken:
    """A credential for the SDK: always the admin token (Cerulean has no Entra ID)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CERULEAN_ADMIN_TOKEN": ADMIN_TOKEN, "CERULEAN_RECONCILE_INTERVAL": "0.5"}
    server = Server(home=tmp_path_factory.mktemp("control") / "home", env=env).start()
    yield server
    server.stop()


def cli(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", *args, "--home", str(server.home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"cerulean {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def data_plane(server: Server, key: str | None = None, retries: int = 2) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key=key or server.key1,
        api_version="2024-10-21",
        max_retries=retries,
    )


def ask(client: AzureOpenAI, deployment: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=deployment, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
    )


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def loaded_models(client: AzureOpenAI) -> set[str]:
    return {model.id for model in client.models.list()}


def test_cli_deployment_of_a_registered_model_follows_on_a_running_server(
    control: Server,
) -> None:
    gguf = next((control.home / "models").glob("gemma*.gguf"))
    added = cli(control, "models", "add", str(gguf), "--name", "gemma-local")
    assert "Registered gemma-local" in added.stdout
    listed = cli(control, "models", "list").stdout
    assert "gemma-local" in listed and str(gguf) in listed and "32768" in listed
    created = cli(
        control, "deployments", "create", "local-chat", "--model", "gemma-local", "--capacity", "5"
    )
    assert "gemma-local is loaded: the deployment answers now." in created.stdout
    client = data_plane(control)
    raw = ask(client, "local-chat")
    assert raw.parse().model == "gemma-local"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
    assert "gemma-local" in loaded_models(client)
    refused = cli(control, "models", "remove", "gemma-local", check=False)
    assert refused.returncode == 1 and "deployed as local-chat" in refused.stderr

    stream = client.chat.completions.create(
        model="local-chat",
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=48,
        stream=True,
    )
    chunks = iter(stream)
    first = next(c for c in chunks if c.choices)
    assert first.choices[0].delta is not None
    cli(control, "deployments", "delete", "local-chat")
    time.sleep(1.0)  # the server has noticed by now; the answer must still finish
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] in ("stop", "length")
    eventually(lambda: "gemma-local" not in loaded_models(client))  # unloaded once idle
    with pytest.raises(openai.NotFoundError):
        ask(client, "local-chat")
    cli(control, "models", "remove", "gemma-local")
    assert "gemma-local" not in cli(control, "models", "list").stdout


def test_cli_key_rotation_on_a_running_server(control: Server) -> None:
    key1 = control.key1  # keeps working throughout
    listed = cli(control, "keys", "list").stdout
    assert f"{control.key1[:4]}****" in listed and control.key1 not in listed
    before = json.loads((control.home / "keys.json").read_text())["key2"]
    ask(data_plane(control, before), "gpt-4")
    done = cli(control, "keys", "regenerate", "key2")
    new = done.stdout.strip()
    assert len(new) == 32 and new != before
    ask(data_plane(control, new), "gpt-4")  # at once
    time.sleep(1.1)  # CERULEAN_KEY_CACHE_SECONDS: the longest the old value may still pass
    with pytest.raises(openai.AuthenticationError):
        ask(data_plane(control, before, retries=0), "gpt-4")
    ask(data_plane(control, key1), "gpt-4")


def test_management_sdk(control: Server) -> None:
    sdk = CognitiveServicesManagementClient(
        StaticToken(ADMIN_TOKEN),  # type: ignore[arg-type]
        SUBSCRIPTION,
        base_url=control.endpoint.rstrip("/"),
    )
    body = Deployment(
        sku=Sku(name="Standard", capacity=3),
        properties=DeploymentProperties(
            model=DeploymentModel(format="OpenAI", name="gemma-3-270m", version="q4_k_m")
        ),
    )
    created = sdk.deployments.begin_create_or_update(
        GROUP, "cerulean", "sdk-dep", body, **HTTP
    ).result()
    assert created.name == "sdk-dep"
    assert created.sku.capacity == 3
    assert created.properties.provisioning_state == "Succeeded"
    limits = {limit.key: limit.count for limit in created.properties.rate_limits}
    assert limits == {"request": 3, "token": 3000}
    got = sdk.deployments.get(GROUP, "cerulean", "sdk-dep", **HTTP)
    assert got.id.endswith("/accounts/cerulean/deployments/sdk-dep")
    assert got.properties.model.name == "gemma-3-270m"
    names = {d.name for d in sdk.deployments.list(GROUP, "cerulean", **HTTP)}
    assert names >= {"gpt-35-turbo", "gpt-4", "sdk-dep"}
    raw = ask(data_plane(control), "sdk-dep")
    assert raw.headers["x-ratelimit-limit-tokens"] == "3000"
    sdk.deployments.begin_delete(GROUP, "cerulean", "sdk-dep", **HTTP).result()
    with pytest.raises(ResourceNotFoundError):
        sdk.deployments.get(GROUP, "cerulean", "sdk-dep", **HTTP)

    keys = sdk.accounts.list_keys(GROUP, "cerulean", **HTTP)
    assert keys.key1 == control.key1
    old = keys.key1
    rotated = sdk.accounts.regenerate_key(GROUP, "cerulean", "Key1", **HTTP)
    assert rotated.key1 != old and rotated.key2 == keys.key2
    answer = ask(data_plane(control, rotated.key1), "gpt-4").parse()
    assert answer.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        ask(data_plane(control, old, retries=0), "gpt-4")

    intruder = CognitiveServicesManagementClient(
        StaticToken(rotated.key1),  # type: ignore[arg-type]
        SUBSCRIPTION,
        base_url=control.endpoint.rstrip("/"),
    )
    with pytest.raises(ClientAuthenticationError):
        intruder.accounts.list_keys(GROUP, "cerulean", **HTTP)


def test_reset_refused_while_serving_then_cleans_up(control: Server) -> None:
    refused = cli(control, "reset", "--yes", check=False)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    control.stop()
    cli(control, "reset", "--yes")
    assert not control.home.exists()
