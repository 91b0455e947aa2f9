"""Entra ID sign-in in-process: bearer tokens of a real issuer (its JWKS on loopback) on the data
plane and the management API, roles, disableLocalAuth, and Azure's exact error bodies."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from tests.conformance.fuzz import fuzz_settings
from tests.conformance.recorder import record_responses
from tests.conftest import KEY1
from tests.entra_helpers import AUDIENCE, ISSUER, MANAGEMENT, Issuer, JwksServer, unsigned_token

USER = "11111111-1111-4111-8111-111111111111"
NOBODY = "22222222-2222-4222-8222-222222222222"
ADMIN_ROLE = "33333333-3333-4333-8333-333333333333"
CHAT = "/openai/deployments/gpt-4/chat/completions?api-version=2024-10-21"
MESSAGE = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
ACCOUNT = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/cerulean"
)
ARM = "?api-version=2024-10-01"
UNAUTHORIZED = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.",
}
CHAT_ACTION = "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def jwks(issuer: Issuer) -> Iterator[JwksServer]:
    with JwksServer(issuer) as server:
        yield server


@pytest.fixture
def app_client(tmp_path: Path, jwks: JwksServer) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path / "home",
        key1=KEY1,  # type: ignore[arg-type]
        entra_issuer=ISSUER,
        entra_jwks_url=jwks.url,
        entra_jwks_refresh_interval=0,
    )
    app = create_app(settings, {"fake-model": FakeEngine()})
    with TestClient(app, raise_server_exceptions=False) as client:
        record_responses(client)
        state: AppState = app.state.cerulean
        state.store.add_role_assignment(USER, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd")
        state.store.add_role_assignment(ADMIN_ROLE, "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68")
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_token_with_the_role_is_served(app_client: TestClient, issuer: Issuer) -> None:
    for key in issuer.keys:  # RS256 and ES256
        answer = app_client.post(CHAT, json=MESSAGE, headers=bearer(issuer.token(USER, key=key)))
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    listed = app_client.get("/openai/v1/models", headers=bearer(issuer.token(USER)))
    assert listed.status_code == 200


def test_a_token_without_the_data_action_is_azures_permission_denied(
    app_client: TestClient, issuer: Issuer
) -> None:
    for principal in (NOBODY, ADMIN_ROLE):  # no role; Cognitive Services Contributor
        answer = app_client.post(CHAT, json=MESSAGE, headers=bearer(issuer.token(principal)))
        assert answer.status_code == 401
        assert answer.json() == {
            "error": {
                "code": "PermissionDenied",
                "message": f"The principal `{principal}` lacks the required data action "
                f"`{CHAT_ACTION}` to perform `POST /openai/deployments/{{deployment-id}}/chat"
                "/completions` operation.",
            }
        }


def test_a_role_assigned_meanwhile_works_at_once(app_client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(NOBODY)
    assert app_client.post(CHAT, json=MESSAGE, headers=bearer(token)).status_code == 401
    state: AppState = app_client.app.state.cerulean  # type: ignore[attr-defined]
    state.store.add_role_assignment(NOBODY, "a001fd3d-188f-4b5d-821b-7da978bf7442")
    assert app_client.post(CHAT, json=MESSAGE, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "case",
    ["expired", "audience", "issuer", "signature", "none", "kid", "garbage", "management"],
)
def test_bad_tokens_get_the_unwrapped_401(
    app_client: TestClient, issuer: Issuer, case: str
) -> None:
    from tests.entra_helpers import new_key

    tokens = {
        "expired": lambda: issuer.token(USER, ttl=-3600),
        "audience": lambda: issuer.token(USER, audience="api://something-else"),
        "issuer": lambda: issuer.token(USER, issuer="https://sts.windows.net/evil/"),
        "signature": lambda: issuer.token(USER, key=new_key("RS256", kid=issuer.keys[0].kid)),
        "none": lambda: unsigned_token(USER, kid=issuer.keys[0].kid),
        "kid": lambda: issuer.token(USER, key=new_key("ES256")),
        "garbage": lambda: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "management": lambda: issuer.token(USER, audience=MANAGEMENT),
    }
    answer = app_client.post(CHAT, json=MESSAGE, headers=bearer(tokens[case]()))
    assert answer.status_code == 401
    assert answer.json() == UNAUTHORIZED


def test_keys_still_work_beside_tokens(app_client: TestClient) -> None:
    assert app_client.post(CHAT, json=MESSAGE, headers={"api-key": KEY1}).status_code == 200
    assert app_client.post(CHAT, json=MESSAGE, headers=bearer(KEY1)).status_code == 200


def test_disable_local_auth_refuses_keys_with_403(app_client: TestClient, issuer: Issuer) -> None:
    admin = bearer(issuer.token(ADMIN_ROLE, audience=MANAGEMENT))
    body = {"properties": {"disableLocalAuth": True}}
    patched = app_client.patch(f"{ACCOUNT}{ARM}", json=body, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["properties"]["disableLocalAuth"] is True
    disabled = {
        "error": {
            "code": "AuthenticationTypeDisabled",
            "message": "Key based authentication is disabled for this resource.",
        }
    }
    for headers in ({"api-key": KEY1}, {"api-key": "wrong"}, bearer(KEY1)):
        answer = app_client.post(CHAT, json=MESSAGE, headers=headers)
        assert answer.status_code == 403
        assert answer.json() == disabled
    assert (
        app_client.post(CHAT, json=MESSAGE, headers=bearer(issuer.token(USER))).status_code == 200
    )
    assert app_client.post(CHAT, json=MESSAGE).json() == UNAUTHORIZED  # no credentials at all
    assert app_client.get("/metrics", headers={"api-key": KEY1}).status_code == 403
    got = app_client.get(f"{ACCOUNT}{ARM}", headers=admin).json()
    assert got["properties"]["disableLocalAuth"] is True
    assert got["kind"] == "OpenAI"
    body["properties"]["disableLocalAuth"] = False
    assert app_client.patch(f"{ACCOUNT}{ARM}", json=body, headers=admin).status_code == 200
    assert app_client.post(CHAT, json=MESSAGE, headers={"api-key": KEY1}).status_code == 200


def _arm(client: TestClient, method: str, path: str, token: str, **kwargs: Any) -> Any:
    return client.request(method, f"{ACCOUNT}{path}{ARM}", headers=bearer(token), **kwargs)


def test_management_api_takes_management_tokens_by_role(
    app_client: TestClient, issuer: Issuer
) -> None:
    admin = issuer.token(ADMIN_ROLE, audience=MANAGEMENT)
    user = issuer.token(USER, audience=MANAGEMENT)
    keys = _arm(app_client, "POST", "/listKeys", admin)
    assert keys.status_code == 200 and keys.json()["key1"] == KEY1
    assert _arm(app_client, "GET", "/deployments", user).status_code == 200  # OpenAI User reads
    denied = _arm(app_client, "POST", "/listKeys", user)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "AuthorizationFailed"
    assert (
        "Microsoft.CognitiveServices/accounts/listKeys/action" in denied.json()["error"]["message"]
    )
    wrong = _arm(app_client, "GET", "/deployments", issuer.token(ADMIN_ROLE))  # data-plane aud
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    expired = _arm(
        app_client, "GET", "/deployments", issuer.token(ADMIN_ROLE, audience=MANAGEMENT, ttl=-3600)
    )
    assert expired.json()["error"]["code"] == "ExpiredAuthenticationToken"
    forged = _arm(
        app_client, "GET", "/deployments", unsigned_token(ADMIN_ROLE, audience=MANAGEMENT)
    )
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "InvalidAuthenticationToken"
    legacy = issuer.token(ADMIN_ROLE, audience="https://management.core.windows.net/")
    assert _arm(app_client, "GET", "/deployments", legacy).status_code == 200


def test_without_an_issuer_a_token_is_the_unwrapped_401(client: TestClient) -> None:
    token = Issuer().token(USER)
    answer = client.post(CHAT, json=MESSAGE, headers={**bearer(token), "api-key": ""})
    assert answer.status_code == 401  # an empty api-key is a wrong key: api-key wins
    del client.headers["api-key"]
    answer = client.post(CHAT, json=MESSAGE, headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json() == UNAUTHORIZED


# -- fuzz: hostile tokens and account bodies --------------------------------------------------


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    """JWT-shaped credentials: headers and claims of any JSON (or none), any signature bytes."""
    header = draw(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku", "x5u"]), _JSON))
    claims = draw(_JSON)
    raw_header = json.dumps(header).encode() if draw(st.booleans()) else draw(st.binary())
    raw_claims = json.dumps(claims).encode() if draw(st.booleans()) else draw(st.binary())
    signature = draw(st.binary(max_size=300))
    return f"eyJ{_segment(raw_header)}.{_segment(raw_claims)}.{_segment(signature)}"


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory, jwks: JwksServer) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path_factory.mktemp("entra-fuzz") / "home",
        key1=KEY1,  # type: ignore[arg-type]
        entra_issuer=ISSUER,
        entra_jwks_url=jwks.url,
    )
    app = create_app(settings, {"fake-model": FakeEngine()})
    with TestClient(app, raise_server_exceptions=False) as client:
        record_responses(client)
        state: AppState = app.state.cerulean
        state.store.add_role_assignment(ADMIN_ROLE, "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68")
        yield client


@fuzz_settings(150)
@given(token=hostile_tokens())
def test_hostile_tokens_get_the_unwrapped_401(fuzz_client: TestClient, token: str) -> None:
    answer = fuzz_client.post(CHAT, json=MESSAGE, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert answer.json() == UNAUTHORIZED
    arm = fuzz_client.get(f"{ACCOUNT}/deployments{ARM}", headers=bearer(token))
    assert arm.status_code == 401 and arm.json()["error"]["code"].startswith("Invalid")


@fuzz_settings(100)
@given(
    body=_JSON
    | st.fixed_dictionaries(
        {
            "properties": st.dictionaries(
                st.sampled_from(["disableLocalAuth", "publicNetworkAccess", "customSubDomainName"]),
                _JSON,
            )
        }
    )
)
def test_account_bodies_get_200_or_arms_400(
    fuzz_client: TestClient, issuer: Issuer, body: Any
) -> None:
    admin = bearer(issuer.token(ADMIN_ROLE, audience=MANAGEMENT))
    answer = fuzz_client.patch(f"{ACCOUNT}{ARM}", content=json.dumps(body), headers=admin)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["code"] == "InvalidRequestContent"
    else:
        assert isinstance(answer.json()["properties"]["disableLocalAuth"], bool)
    reset = {"properties": {"disableLocalAuth": False}}
    assert fuzz_client.patch(f"{ACCOUNT}{ARM}", json=reset, headers=admin).status_code == 200


def test_the_local_issuer_keys_are_served_only_when_trusted(tmp_path: Path) -> None:
    from cerulean.services.local_issuer import issue_token

    for trusted in (False, True):
        settings = Settings(home=tmp_path / str(trusted), trust_local_issuer=trusted)
        app = create_app(settings, {"fake-model": FakeEngine()})
        with TestClient(app, raise_server_exceptions=False) as client:
            record_responses(client)
            answer = client.get("/cerulean/local-issuer/keys")  # no credentials: public
            if not trusted:
                assert answer.status_code == 404
                continue
            assert answer.status_code == 200
            (key,) = answer.json()["keys"]
            assert key["kty"] == "EC" and "d" not in key  # the public half only
            token = issue_token(settings, USER)
            assert jwt.get_unverified_header(token)["kid"] == key["kid"]
            jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience=AUDIENCE)


def test_the_studio_signs_in_a_contributor_token_only(
    tmp_path: Path, jwks: JwksServer, issuer: Issuer
) -> None:
    """The Studio's pages are HTML (outside the spec the conformance recorder checks)."""
    settings = Settings(
        home=tmp_path / "home",
        key1=KEY1,  # type: ignore[arg-type]
        entra_issuer=ISSUER,
        entra_jwks_url=jwks.url,
        entra_jwks_refresh_interval=0,
    )
    with TestClient(create_app(settings, {"fake-model": FakeEngine()})) as app_client:
        state: AppState = app_client.app.state.cerulean  # type: ignore[attr-defined]
        state.store.add_role_assignment(USER, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd")
        state.store.add_role_assignment(ADMIN_ROLE, "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68")
        _studio_sign_ins(app_client, issuer)


def _studio_sign_ins(app_client: TestClient, issuer: Issuer) -> None:
    origin = {"origin": "http://testserver"}
    refused = [
        issuer.token(ADMIN_ROLE),  # the data-plane audience: not a management token
        issuer.token(USER, audience=MANAGEMENT),  # OpenAI User: no key management
        issuer.token(NOBODY, audience=MANAGEMENT),  # no role at all
    ]
    for token in refused:
        answer = app_client.post(
            "/studio/sign-in", data={"token": token}, headers=origin, follow_redirects=False
        )
        assert answer.status_code == 401, answer.text
    signed = app_client.post(
        "/studio/sign-in",
        data={"token": issuer.token(ADMIN_ROLE, audience=MANAGEMENT)},
        headers=origin,
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    assert app_client.get("/studio/playground", follow_redirects=False).status_code == 200
