"""Cerulean Studio in process (fake engine): sign-in, sessions, CSRF, origin, every page."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.services.studio import studio_token_file
from cerulean.settings import Settings
from tests.conftest import KEY1

ORIGIN = "http://testserver"


@pytest.fixture
def studio(settings: Settings, fake_engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(settings, {"fake-model": fake_engine}, default_model=("fake-model", "1"))
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def token(settings: Settings) -> str:
    return studio_token_file(settings).read_text().strip()


def sign_in(client: TestClient, settings: Settings) -> str:
    """Sign in; the CSRF token of the session."""
    response = client.post(
        "/studio/sign-in", data={"token": token(settings)}, headers={"origin": ORIGIN}
    )
    assert response.status_code == 303, response.text
    page = client.get("/studio/playground")
    assert page.status_code == 200
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_pages_need_a_session(studio: TestClient) -> None:
    for path in ("/studio", "/studio/playground", "/studio/deployments", "/studio/keys"):
        response = studio.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/studio/sign-in"
    refused = studio.post("/studio/api/chat", json={}, headers={"origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "SessionExpired"


def test_the_sign_in_token_file_is_private(studio: TestClient, settings: Settings) -> None:
    path = studio_token_file(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(token(settings)) == 64


def test_a_wrong_token_is_refused(studio: TestClient, settings: Settings) -> None:
    response = studio.post("/studio/sign-in", data={"token": "nope"}, headers={"origin": ORIGIN})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "not this server" in response.text
    assert token(settings) not in response.text


def test_an_account_key_does_not_sign_in(studio: TestClient) -> None:
    response = studio.post("/studio/sign-in", data={"token": KEY1}, headers={"origin": ORIGIN})
    assert response.status_code == 401


def test_the_session_cookie_is_httponly_strict_and_scoped(
    studio: TestClient, settings: Settings
) -> None:
    response = studio.post(
        "/studio/sign-in", data={"token": token(settings)}, headers={"origin": ORIGIN}
    )
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/studio" in cookie
    assert token(settings) not in cookie
    assert response.headers["location"] == "/studio/playground"


def test_pages_carry_a_strict_csp_and_no_secret(studio: TestClient, settings: Settings) -> None:
    sign_in(studio, settings)
    for path in ("playground", "deployments", "keys", "usage", "upstreams"):
        response = studio.get(f"/studio/{path}")
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert token(settings) not in response.text
        assert KEY1 not in response.text  # keys are masked until shown
        assert "<script>" not in response.text  # no inline script


def test_a_cross_site_post_is_refused(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    for headers in (
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site", "origin": ORIGIN},
        {"referer": "https://evil.example/form"},
    ):
        response = studio.post(
            "/studio/deployments",
            data={"csrf": csrf, "name": "evil", "model": "fake-model", "capacity": "1"},
            headers=headers,
        )
        assert response.status_code == 403, headers
        assert "another site" in response.text
    assert "evil" not in studio.get("/studio/deployments").text


def test_a_post_without_the_csrf_token_is_refused(studio: TestClient, settings: Settings) -> None:
    sign_in(studio, settings)
    for csrf in ("", "forged"):
        response = studio.post(
            "/studio/keys/key1/regenerate",
            data={"csrf": csrf, "confirm": "yes"},
            headers={"origin": ORIGIN},
        )
        assert response.status_code == 403
    api = studio.post("/studio/api/chat", json={"messages": []}, headers={"origin": ORIGIN})
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "InvalidCsrfToken"


def test_an_expired_session_is_refused(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    state = studio.app.state.cerulean  # type: ignore[attr-defined]
    state.studio._clock = lambda: 1e12  # far past every session's expiry
    response = studio.get("/studio/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/studio/sign-in?expired=1"
    api = studio.post(
        "/studio/api/chat", json={"messages": []}, headers={"origin": ORIGIN, "x-csrf-token": csrf}
    )
    assert api.status_code == 401


def test_sign_out_ends_the_session(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    cookie = studio.cookies.get("cerulean_studio")
    response = studio.post("/studio/sign-out", data={"csrf": csrf}, headers={"origin": ORIGIN})
    assert response.status_code == 303
    studio.cookies.set("cerulean_studio", cookie or "", path="/studio")
    assert studio.get("/studio/keys").status_code == 303


def test_a_forged_cookie_is_refused(studio: TestClient, settings: Settings) -> None:
    sign_in(studio, settings)
    cookie = studio.cookies.get("cerulean_studio") or ""
    sid, _, _ = cookie.rpartition(".")
    studio.cookies.clear()
    studio.cookies.set("cerulean_studio", f"{sid}.{'0' * 64}", path="/studio")
    assert studio.get("/studio/keys").status_code == 303


def stream(studio: TestClient, csrf: str, **extra: object) -> list[dict[str, object]]:
    body = {"deployment": "gpt-4", "system": "Be brief.", "messages": [], **extra}
    body["messages"] = [{"role": "user", "content": "Hello"}]
    response = studio.post(
        "/studio/api/chat", json=body, headers={"origin": ORIGIN, "x-csrf-token": csrf}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_the_playground_streams_with_usage(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    chunks = stream(studio, csrf, temperature="0.5", max_tokens="8", stop=["\n\n"])
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""  # type: ignore[index]
        for c in chunks
        if c["choices"]
    )
    assert text
    usage = chunks[-1]["usage"]
    assert isinstance(usage, dict)
    assert usage["completion_tokens"] > 0
    deadline = time.monotonic() + 10  # usage is written about once a second
    while 'data-series="gpt-4"' not in studio.get("/studio/usage?range=hour").text:
        assert time.monotonic() < deadline, "the answer never reached the usage chart"
        time.sleep(0.2)
    by_key = studio.get("/studio/usage?range=hour&by=key").text
    assert 'data-series="studio"' in by_key  # the playground's caller


def test_the_playground_refuses_an_unknown_deployment(
    studio: TestClient, settings: Settings
) -> None:
    csrf = sign_in(studio, settings)
    response = studio.post(
        "/studio/api/chat",
        json={"deployment": "nope", "messages": [{"role": "user", "content": "hi"}]},
        headers={"origin": ORIGIN, "x-csrf-token": csrf},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DeploymentNotFound"


def test_the_playground_works_without_javascript(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    form = {"csrf": csrf, "deployment": "gpt-4", "system": "", "message": "Hello"}
    response = studio.post(
        "/studio/playground", data={**form, "action": "send"}, headers={"origin": ORIGIN}
    )
    assert response.status_code == 200, response.text
    assert "completion" in response.text and " ms" in response.text
    assert 'class="msg assistant"' in response.text


def test_view_code_matches_the_settings(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    response = studio.post(
        "/studio/api/code",
        json={
            "deployment": "gpt-4o",
            "system": "Be brief.",
            "temperature": "0.2",
            "max_tokens": "50",
            "stop": ["END"],
            "json_mode": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        headers={"origin": ORIGIN, "x-csrf-token": csrf},
    )
    code = response.json()
    assert "model='gpt-4o'" in code["python"]
    assert "temperature=0.2" in code["python"] and "max_tokens=50" in code["python"]
    assert "stop=['END']" in code["python"] and "json_object" in code["python"]
    assert '"temperature": 0.2' in code["curl"] and "/deployments/gpt-4o/" in code["curl"]
    assert KEY1 not in code["python"] + code["curl"]
    assert "$AZURE_OPENAI_API_KEY" in code["curl"]


def test_deployments_create_change_and_delete(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    post = {"headers": {"origin": ORIGIN}}
    created = studio.post(
        "/studio/deployments",
        data={"csrf": csrf, "name": "mine", "model": "fake-model", "capacity": "3"},
        **post,  # type: ignore[arg-type]
    )
    assert created.status_code == 200 and "Created mine" in created.text
    assert 'id="deployment-mine"' in created.text
    taken = studio.post(
        "/studio/deployments",
        data={"csrf": csrf, "name": "mine", "model": "fake-model", "capacity": "3"},
        **post,  # type: ignore[arg-type]
    )
    assert taken.status_code == 400 and "already exists" in taken.text
    changed = studio.post(
        "/studio/deployments/mine/capacity",
        data={"csrf": csrf, "capacity": "5"},
        **post,  # type: ignore[arg-type]
    )
    assert "capacity 5" in changed.text
    assert "0 / 5000" in changed.text  # its token window: nothing used, 5K TPM
    confirm = studio.post("/studio/deployments/mine/delete", data={"csrf": csrf}, **post)  # type: ignore[arg-type]
    assert "Delete mine?" in confirm.text
    deleted = studio.post(
        "/studio/deployments/mine/delete",
        data={"csrf": csrf, "confirm": "yes"},
        **post,  # type: ignore[arg-type]
    )
    assert "Deleted mine" in deleted.text and 'id="deployment-mine"' not in deleted.text


def test_keys_show_and_regenerate(studio: TestClient, settings: Settings) -> None:
    csrf = sign_in(studio, settings)
    post = {"headers": {"origin": ORIGIN}}
    keys = studio.get("/studio/keys").text
    assert "http://127.0.0.1:" in keys  # the endpoint
    pinned = studio.post(
        "/studio/keys/key1/regenerate", data={"csrf": csrf, "confirm": "yes"}, **post
    )  # type: ignore[arg-type]
    assert pinned.status_code == 409  # the fixture pins both keys
    shown = studio.post("/studio/keys/key1/show", data={"csrf": csrf}, **post)  # type: ignore[arg-type]
    assert KEY1 in shown.text


def test_no_studio_means_azure_404(settings: Settings, fake_engine: FakeEngine) -> None:
    off = settings.model_copy(update={"studio": False})
    app = create_app(off, {"fake-model": fake_engine})
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/studio/sign-in")
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert not studio_token_file(off).exists()


def test_the_admin_token_signs_in_when_set(settings: Settings, fake_engine: FakeEngine) -> None:
    from pydantic import SecretStr

    admin = settings.model_copy(update={"admin_token": SecretStr("z" * 40)})
    app = create_app(admin, {"fake-model": fake_engine})
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        ok = client.post("/studio/sign-in", data={"token": "z" * 40}, headers={"origin": ORIGIN})
        assert ok.status_code == 303
        assert (
            "admin token (<code>CERULEAN_ADMIN_TOKEN</code>)" in client.get("/studio/sign-in").text
        )
    assert not studio_token_file(admin).exists()
