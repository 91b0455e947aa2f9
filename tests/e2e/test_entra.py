"""Entra ID sign-in against a real server: openai 1.x with ``azure_ad_token_provider`` and the v1
client with a callable ``api_key``, tokens from a real issuer on loopback (its JWKS served over
HTTP) and from the home's local issuer (``cerulean tokens issue``), roles assigned with the CLI,
``disableLocalAuth`` set with Microsoft's management SDK and a management token."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties
from openai import AzureOpenAI, OpenAI

from tests.conformance.recorder import recording_client
from tests.e2e.conftest import Server
from tests.entra_helpers import ISSUER, MANAGEMENT, Issuer, JwksServer, new_key, unsigned_token

pytestmark = pytest.mark.slow

USER = "aaaaaaaa-0000-4000-8000-000000000001"
LOCAL = "aaaaaaaa-0000-4000-8000-000000000002"
OPERATOR = "aaaaaaaa-0000-4000-8000-000000000003"
JWKS_TTL = 2.0
UNAUTHORIZED = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.",
}
HTTP = {"enforce_https": False}  # azure-core sends bearer tokens over https only, unless told


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def jwks(issuer: Issuer) -> Iterator[JwksServer]:
    with JwksServer(issuer) as served:
        yield served


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory, jwks: JwksServer) -> Iterator[Server]:
    env = {
        "CERULEAN_ENTRA_ISSUER": ISSUER,
        "CERULEAN_ENTRA_JWKS_URL": jwks.url,
        "CERULEAN_ENTRA_JWKS_CACHE_SECONDS": str(JWKS_TTL),
        "CERULEAN_ENTRA_JWKS_REFRESH_INTERVAL": "0",
    }
    home = tmp_path_factory.mktemp("entra") / "home"
    server = Server(home=home, env=env, extra_args=["--trust-local-issuer", "--no-embeddings"])
    yield server.start()
    server.stop()


def cli(server: Server, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", *args, "--home", str(server.home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"cerulean {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def azure(server: Server, provider: Callable[[], str]) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint,
        azure_ad_token_provider=provider,
        api_version="2024-10-21",
        max_retries=0,
        http_client=recording_client(),
    )


def ask(client: AzureOpenAI | OpenAI) -> Any:
    return client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hello"}], max_tokens=3
    )


def refused(client: AzureOpenAI | OpenAI) -> tuple[int, Any]:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client)
    return caught.value.status_code, caught.value.response.json()


def test_token_provider_needs_the_role_then_is_served(entra: Server, issuer: Issuer) -> None:
    calls: list[str] = []

    def provider() -> str:
        calls.append("called")
        return issuer.token(USER)

    client = azure(entra, provider)
    status, body = refused(client)
    assert status == 401
    assert body["error"]["code"] == "PermissionDenied"
    assert (
        f"The principal `{USER}` lacks the required data action `Microsoft."
        in (body["error"]["message"])
    )
    cli(entra, "roles", "assign", USER, "Cognitive Services OpenAI User")
    answer = ask(client)
    assert answer.choices[0].message.role == "assistant"
    assert len(calls) == 2  # the provider is asked on every request


def test_v1_client_with_a_callable_api_key(entra: Server, issuer: Issuer) -> None:
    client = OpenAI(
        base_url=f"{entra.endpoint}openai/v1/",
        api_key=lambda: issuer.token(USER, key=issuer.keys[1]),  # ES256
        max_retries=0,
        http_client=recording_client(),
    )
    assert ask(client).choices[0].message.role == "assistant"
    assert "gemma-3-270m" in {m.id for m in client.models.list()}  # a read data action
    keyed = OpenAI(base_url=f"{entra.endpoint}openai/v1/", api_key=entra.key1, max_retries=0)
    assert ask(keyed).choices[0].message.role == "assistant"  # keys beside tokens


@pytest.mark.parametrize(
    "case", ["expired", "audience", "issuer", "signature", "alg none", "unknown kid"]
)
def test_bad_tokens_get_azures_401(entra: Server, issuer: Issuer, case: str) -> None:
    kid = issuer.keys[0].kid
    tokens: dict[str, Callable[[], str]] = {
        "expired": lambda: issuer.token(USER, ttl=-3600),
        "audience": lambda: issuer.token(USER, audience="https://graph.microsoft.com"),
        "issuer": lambda: issuer.token(USER, issuer="https://sts.windows.net/other-tenant/"),
        "signature": lambda: issuer.token(USER, key=new_key("RS256", kid=kid)),
        "alg none": lambda: unsigned_token(USER, kid=kid),
        "unknown kid": lambda: issuer.token(USER, key=new_key("RS256")),
    }
    assert refused(azure(entra, tokens[case])) == (401, UNAUTHORIZED)


def test_key_rotation_at_the_issuer(entra: Server, issuer: Issuer, jwks: JwksServer) -> None:
    rotated = new_key("ES256")
    client = azure(entra, lambda: issuer.token(USER, key=rotated))
    assert refused(client) == (401, UNAUTHORIZED)  # not published yet
    issuer.keys.append(rotated)
    hits = jwks.hits
    assert ask(client).choices[0].message.role == "assistant"  # unknown kid: fetched again
    assert jwks.hits > hits
    retired = issuer.keys.pop(0)
    old = azure(entra, lambda: issuer.token(USER, key=retired))
    time.sleep(JWKS_TTL + 0.5)  # the cached JWKS expires: the retired key goes with it
    assert refused(old) == (401, UNAUTHORIZED)
    issuer.keys.insert(0, retired)


def test_jwks_down_fails_closed(entra: Server, issuer: Issuer, jwks: JwksServer) -> None:
    client = azure(entra, lambda: issuer.token(USER))
    assert ask(client).choices[0].message.role == "assistant"
    jwks.down = True
    try:
        time.sleep(JWKS_TTL + 0.5)
        assert refused(client) == (401, UNAUTHORIZED)
    finally:
        jwks.down = False
    assert ask(client).choices[0].message.role == "assistant"


def test_local_issuer_tokens_from_the_cli(entra: Server) -> None:
    token = cli(entra, "tokens", "issue", "--principal", LOCAL, "--ttl", "600").strip()
    client = azure(entra, lambda: token)
    assert refused(client)[1]["error"]["code"] == "PermissionDenied"
    cli(entra, "roles", "assign", LOCAL, "Cognitive Services OpenAI Contributor")
    assert ask(client).choices[0].message.role == "assistant"
    key_file = entra.home / "local-issuer.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert token not in entra.output()  # tokens never logged


class ManagementToken:
    def __init__(self, issuer: Issuer, oid: str) -> None:
        self.issuer, self.oid = issuer, oid

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://management.azure.com/.default",)
        return AccessToken(self.issuer.token(self.oid, audience=MANAGEMENT), int(time.time()) + 600)


def test_disable_local_auth_with_the_management_sdk(entra: Server, issuer: Issuer) -> None:
    def sdk(oid: str) -> CognitiveServicesManagementClient:
        return CognitiveServicesManagementClient(
            ManagementToken(issuer, oid),  # type: ignore[arg-type]
            "00000000-0000-0000-0000-000000000000",
            base_url=entra.endpoint.rstrip("/"),
        )

    with pytest.raises(HttpResponseError) as denied:  # OpenAI User may not read keys
        sdk(USER).accounts.list_keys("rg", "cerulean", **HTTP)
    assert denied.value.status_code == 403
    cli(entra, "roles", "assign", OPERATOR, "Cognitive Services Contributor")
    operator = sdk(OPERATOR)
    assert operator.accounts.list_keys("rg", "cerulean", **HTTP).key1 == entra.key1
    keyed = AzureOpenAI(
        azure_endpoint=entra.endpoint, api_key=entra.key1, api_version="2024-10-21", max_retries=0
    )
    token = azure(entra, lambda: issuer.token(USER))
    disable = Account(properties=AccountProperties(disable_local_auth=True))
    try:
        updated = operator.accounts.begin_update("rg", "cerulean", disable, **HTTP).result()
        assert updated.properties.disable_local_auth is True
        assert operator.accounts.get("rg", "cerulean", **HTTP).properties.disable_local_auth
        status, body = refused(keyed)
        assert status == 403
        assert body == {
            "error": {
                "code": "AuthenticationTypeDisabled",
                "message": "Key based authentication is disabled for this resource.",
            }
        }
        assert ask(token).choices[0].message.role == "assistant"
    finally:
        enable = Account(properties=AccountProperties(disable_local_auth=False))
        operator.accounts.begin_update("rg", "cerulean", enable, **HTTP).result()
    assert ask(keyed).choices[0].message.role == "assistant"
