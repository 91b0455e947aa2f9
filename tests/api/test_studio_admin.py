"""The Studio's Batches, Content filters and Role assignments pages in process (fake engine):
each shows what the store holds, each form works with the session's CSRF token and is refused
without it, bad input is a message on the page (never a 500), signed-out visits sign in."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.store.batches import BatchRecord, JobStore
from tests.api.test_studio import ORIGIN, sign_in
from tests.conftest import KEY1

POST = {"origin": ORIGIN}
OID = "4f6c7a1e-0b2d-4c8e-9a3f-5d1e2b7c9a10"
USER = "Cognitive Services OpenAI User"


@pytest.fixture
def studio(settings: Settings, fake_engine: FakeEngine) -> Iterator[TestClient]:
    # No batch runner: a created batch stays "validating", so it can be cancelled.
    quiet = settings.model_copy(update={"batch_runner": False})
    app = create_app(quiet, {"fake-model": fake_engine}, default_model=("fake-model", "1"))
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


@pytest.fixture
def csrf(studio: TestClient, settings: Settings) -> str:
    return sign_in(studio, settings)


def form(studio: TestClient, path: str, **fields: str) -> Any:
    return studio.post(f"/studio/{path}", data=fields, headers=POST)


def create_batch(studio: TestClient) -> str:
    line = {
        "custom_id": "c1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
    }
    key = {"api-key": KEY1}
    uploaded = studio.post(
        "/openai/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", json.dumps(line).encode())},
        headers=key,
    )
    assert uploaded.status_code == 200, uploaded.text
    created = studio.post(
        "/openai/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers=key,
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def error_of(response: Any) -> str:
    """The page's error message (unescaped), or ""."""
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text)
    return html.unescape(found.group(1)) if found else ""


def notice_of(response: Any) -> str:
    """The page's notice (unescaped), or ""."""
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', response.text)
    return html.unescape(found.group(1)) if found else ""


def jobs(studio: TestClient) -> JobStore:
    return JobStore(studio.app.state.cerulean.store.engine)  # type: ignore[attr-defined]


def test_the_pages_need_a_session(studio: TestClient) -> None:
    for path in ("batches", "content-filters", "roles"):
        response = studio.get(f"/studio/{path}")
        assert response.status_code == 303, path
        assert response.headers["location"] == "/studio/sign-in"
    for path in ("batches/batch_x/cancel", "content-filters/blocklists", "roles"):
        response = form(studio, path, csrf="anything", confirm="yes")
        assert response.status_code == 303, path
        assert response.headers["location"] == "/studio/sign-in"


def test_the_nav_names_the_three_pages(studio: TestClient, csrf: str) -> None:
    for path, label in (
        ("batches", "Batches"),
        ("content-filters", "Content filters"),
        ("roles", "Roles"),
    ):
        page = studio.get(f"/studio/{path}")
        assert page.status_code == 200, path
        assert f'<a href="/studio/{path}" aria-current="page">{label}</a>' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text


def test_batches_are_listed_newest_first(studio: TestClient, csrf: str) -> None:
    assert "No batch yet." in studio.get("/studio/batches").text
    first = create_batch(studio)
    time.sleep(1.05)  # created_at counts seconds
    second = create_batch(studio)
    done = BatchRecord(
        id="batch_done",
        input_file_id="file-in",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        api_version="2024-10-21",
        status="completed",
        created_at=int(time.time()) - 3600,
        expires_at=int(time.time()) + 3600,
        deployment="gpt-4",
        output_file_id="file-out",
        total=7,
        completed=5,
        failed=2,
    )
    jobs(studio).put_batch(done)
    problems = [
        {"code": "model_not_found", "message": "The deployment 'nope' does not exist.", "line": 1},
        {"code": "model_not_found", "message": "The deployment 'nope' does not exist.", "line": 2},
    ]
    jobs(studio).put_batch(
        replace(done, id="batch_failed", status="failed", errors=json.dumps(problems), total=0)
    )
    text = studio.get("/studio/batches").text
    assert text.index(second) < text.index(first) < text.index("batch_done")
    row = text[text.index('id="batch-batch_done"') :].split("</tr>")[0]
    assert "completed" in row and "5 / 2 / 7" in row and "gpt-4" in row
    assert "file-in" in row and "file-out" in row and "UTC" in row
    assert "/batches/batch_done/cancel" not in text  # a completed batch cannot be cancelled
    assert f"/batches/{first}/cancel" in text and "validating" in text
    failed = text[text.index('id="batch-batch_failed"') :].split("</tr>")[0]
    assert "The deployment &#39;nope&#39; does not exist. (and 1 more)" in failed


def test_cancel_a_batch_after_confirming(studio: TestClient, csrf: str) -> None:
    batch = create_batch(studio)
    asked = form(studio, f"batches/{batch}/cancel", csrf=csrf)
    assert asked.status_code == 200 and f"Cancel {batch}?" in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert jobs(studio).get_batch(batch).status == "validating"  # type: ignore[union-attr]
    done = form(studio, f"batches/{batch}/cancel", csrf=csrf, confirm="yes")
    assert done.status_code == 200 and f"{batch} is cancelling." in done.text
    assert jobs(studio).get_batch(batch).status == "cancelling"  # type: ignore[union-attr]
    assert f"/batches/{batch}/cancel" not in done.text  # no second cancel button


def test_cancelling_is_refused_on_the_page(studio: TestClient, csrf: str) -> None:
    missing = form(studio, "batches/batch_nope/cancel", csrf=csrf, confirm="yes")
    assert missing.status_code == 404
    assert error_of(missing) == "Batch with id 'batch_nope' not found."
    batch = create_batch(studio)
    jobs(studio).update_batch(batch, status="completed")
    finished = form(studio, f"batches/{batch}/cancel", csrf=csrf, confirm="yes")
    assert finished.status_code == 409
    assert error_of(finished) == "Cannot cancel a batch with status 'completed'."


def test_the_forms_need_the_csrf_token(studio: TestClient, csrf: str) -> None:
    batch = create_batch(studio)
    attempts = [
        (f"batches/{batch}/cancel", {"confirm": "yes"}),
        ("content-filters/blocklists", {"name": "words"}),
        ("content-filters/blocklists/words/items", {"pattern": "zanzibar"}),
        ("content-filters/blocklists/words/items/item-1/remove", {"confirm": "yes"}),
        ("content-filters/assign", {"deployment": "gpt-4", "policy": "Microsoft.Default"}),
        ("roles", {"principal": OID, "role": USER}),
        ("roles/remove", {"principal": OID, "role": USER, "confirm": "yes"}),
    ]
    for path, fields in attempts:
        for token in ("", "forged"):
            response = form(studio, path, csrf=token, **fields)
            assert response.status_code == 403, (path, token)
            assert "reload the page" in response.text
        cross = studio.post(
            f"/studio/{path}", data={"csrf": csrf, **fields}, headers={"origin": "https://x.y"}
        )
        assert cross.status_code == 403 and "another site" in cross.text
    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    assert jobs(studio).get_batch(batch).status == "validating"  # type: ignore[union-attr]
    assert store.list_blocklists() == [] and store.list_role_assignments() == []
    assert store.get_deployment("gpt-4").rai_policy is None


def test_policies_and_the_deployments_using_them(studio: TestClient, csrf: str) -> None:
    text = studio.get("/studio/content-filters").text
    default = text[text.index('id="policy-Microsoft.DefaultV2"') :].split("</tr>")[0]
    assert "built-in" in default and "gpt-4" in default  # deployments use the default
    assigned = form(
        studio, "content-filters/assign", csrf=csrf, deployment="gpt-4", policy="microsoft.default"
    )
    assert assigned.status_code == 200, assigned.text
    assert "Deployment gpt-4 uses policy Microsoft.Default." in assigned.text
    row = assigned.text[assigned.text.index('id="policy-Microsoft.Default"') :].split("</tr>")[0]
    assert "gpt-4" in row
    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    assert store.get_deployment("gpt-4").rai_policy == "Microsoft.Default"


def test_a_custom_policy_shows_its_base_mode_and_blocklists(studio: TestClient, csrf: str) -> None:
    from cerulean.services.filtering import manage

    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    manage.put_blocklist(store, "words", "Words we never say")
    manage.put_policy(
        store,
        "strict",
        {
            "mode": "Asynchronous_filter",
            "basePolicyName": "Microsoft.DefaultV2",
            "customBlocklists": [{"blocklistName": "words", "blocking": True}],
        },
    )
    form(studio, "content-filters/assign", csrf=csrf, deployment="gpt-4", policy="strict")
    text = studio.get("/studio/content-filters").text
    row = text[text.index('id="policy-strict"') :].split("</tr>")[0]
    assert "custom" in row and "Asynchronous_filter" in row
    assert "Microsoft.DefaultV2" in row and "words" in row and "gpt-4" in row
    assert "Words we never say" in text


def test_blocklists_and_their_items(studio: TestClient, csrf: str) -> None:
    made = form(studio, "content-filters/blocklists", csrf=csrf, name="words", description="")
    assert made.status_code == 200 and "Created blocklist words." in made.text
    assert 'id="blocklist-words"' in made.text and "No item yet." in made.text
    phrase = form(studio, "content-filters/blocklists/words/items", csrf=csrf, pattern="zanzibar")
    assert phrase.status_code == 200 and "as item-1." in phrase.text
    regex = form(
        studio,
        "content-filters/blocklists/words/items",
        csrf=csrf,
        pattern=r"\bfoo\d+",
        regex="on",
        item="numbers",
    )
    assert regex.status_code == 200 and "Added regular expression" in regex.text
    item1 = regex.text[regex.text.index('id="item-words-item-1"') :].split("</tr>")[0]
    assert "zanzibar" in item1 and "phrase" in item1
    numbers = regex.text[regex.text.index('id="item-words-numbers"') :].split("</tr>")[0]
    assert r"\bfoo\d+" in numbers and "regex" in numbers
    asked = form(studio, "content-filters/blocklists/words/items/item-1/remove", csrf=csrf)
    assert "Remove item-1 from words?" in asked.text
    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    assert len(store.list_blocklist_items("words")) == 2  # not yet
    gone = form(
        studio, "content-filters/blocklists/words/items/item-1/remove", csrf=csrf, confirm="yes"
    )
    assert gone.status_code == 200 and "Removed item-1 from words." in gone.text
    assert 'id="item-words-item-1"' not in gone.text and 'id="item-words-numbers"' in gone.text
    assert [i.name for i in store.list_blocklist_items("words")] == ["numbers"]


def test_the_filter_forms_explain_bad_input(studio: TestClient, csrf: str) -> None:
    cases = [
        ("content-filters/blocklists", {"name": "no spaces"}, 400, "is invalid"),
        ("content-filters/blocklists", {"name": ""}, 400, "is invalid"),
        ("content-filters/blocklists/nope/items", {"pattern": "x"}, 404, "was not found"),
        ("content-filters/assign", {"deployment": "gpt-4", "policy": "nope"}, 400, "does not"),
        ("content-filters/assign", {"deployment": "nope", "policy": "Microsoft.Default"}, 404, ""),
        ("content-filters/blocklists/nope/items/x/remove", {"confirm": "yes"}, 404, "not found"),
    ]
    form(studio, "content-filters/blocklists", csrf=csrf, name="words")
    cases += [
        ("content-filters/blocklists/words/items", {"pattern": "   "}, 400, "must not be empty"),
        ("content-filters/blocklists/words/items", {"pattern": "(a", "regex": "on"}, 400, "RE2"),
        ("content-filters/blocklists/words/items", {"pattern": "a", "item": "a b"}, 400, "invalid"),
        ("content-filters/blocklists/words/items/x/remove", {"confirm": "yes"}, 404, "no item x"),
    ]
    for path, fields, status, message in cases:
        response = form(studio, path, csrf=csrf, **fields)
        assert response.status_code == status, (path, fields, response.text[:300])
        assert message in error_of(response) and error_of(response), (path, fields)
        assert "<h1>Content filters</h1>" in response.text  # the page, with the form refilled
    refilled = form(studio, "content-filters/blocklists/words/items", csrf=csrf, pattern="(a")
    assert refilled.status_code == 200  # "(a" is a fine phrase
    kept = form(
        studio, "content-filters/blocklists/words/items", csrf=csrf, pattern="(b", regex="on"
    )
    assert 'value="(b"' in kept.text


def test_assign_and_remove_a_role(studio: TestClient, csrf: str) -> None:
    assert "No role assignment yet." in studio.get("/studio/roles").text
    given = form(studio, "roles", csrf=csrf, principal=OID.upper(), role=USER)
    assert given.status_code == 200 and notice_of(given) == f"{OID} now holds '{USER}'."
    again = form(studio, "roles", csrf=csrf, principal=OID, role=USER)
    assert notice_of(again) == f"{OID} already held '{USER}'."
    row = again.text[again.text.index('id="assignment-1"') :].split("</tr>")[0]
    assert OID in row and USER in row and "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd" in row
    assert "UTC" in row
    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    assert [(r.principal_id, r.role_id) for r in store.list_role_assignments()] == [
        (OID, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd")
    ]
    role_id = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
    asked = form(studio, "roles/remove", csrf=csrf, principal=OID, role=role_id)
    assert f"Remove &#39;{USER}&#39; from {OID}?" in asked.text
    assert f'name="principal" value="{OID}"' in asked.text  # the confirmation carries them
    assert store.list_role_assignments() != []
    removed = form(studio, "roles/remove", csrf=csrf, principal=OID, role=role_id, confirm="yes")
    assert removed.status_code == 200 and notice_of(removed) == f"{OID} no longer holds '{USER}'."
    assert "No role assignment yet." in removed.text and store.list_role_assignments() == []


def test_every_role_can_be_assigned(studio: TestClient, csrf: str) -> None:
    page = studio.get("/studio/roles").text
    roles = re.findall(r'<option value="([^"]+)"', page)
    assert roles == [
        "Cognitive Services OpenAI User",
        "Cognitive Services OpenAI Contributor",
        "Cognitive Services Contributor",
    ]
    for role in roles:
        assert form(studio, "roles", csrf=csrf, principal=OID, role=role).status_code == 200
    store = studio.app.state.cerulean.store  # type: ignore[attr-defined]
    assert len(store.list_role_assignments()) == 3


def test_the_role_forms_explain_bad_input(studio: TestClient, csrf: str) -> None:
    cases = [
        ("roles", {"principal": "two words", "role": USER}, 400, "is not a principal id"),
        ("roles", {"principal": "", "role": USER}, 400, "is not a principal id"),
        ("roles", {"principal": "x" * 129, "role": USER}, 400, "is not a principal id"),
        ("roles", {"principal": OID, "role": "Owner"}, 400, "is not a role Cerulean knows"),
        ("roles/remove", {"principal": OID, "role": "Owner"}, 400, "is not a role"),
        ("roles/remove", {"principal": OID, "role": USER, "confirm": "yes"}, 404, "does not hold"),
    ]
    for path, fields, status, message in cases:
        response = form(studio, path, csrf=csrf, **fields)
        assert response.status_code == status, (path, fields, response.text[:300])
        assert message in error_of(response) and error_of(response), (path, fields)
    kept = form(studio, "roles", csrf=csrf, principal="two words", role=USER)
    assert 'value="two words"' in kept.text


def test_older_batches_are_a_page_on(
    studio: TestClient, csrf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cerulean.api.studio import batches as batch_pages

    monkeypatch.setattr(batch_pages, "PAGE_SIZE", 1)
    older = create_batch(studio)
    time.sleep(1.05)  # created_at counts seconds
    newer = create_batch(studio)
    first = studio.get("/studio/batches").text
    assert newer in first and older not in first
    assert f'href="/studio/batches?after={newer}"' in first
    second = studio.get(f"/studio/batches?after={newer}").text
    assert older in second and newer not in second and "(older ones)" in second
    assert "?after=" not in second and 'href="/studio/batches">Newest batches' in second
