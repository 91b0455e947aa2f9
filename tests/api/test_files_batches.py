"""Files and Batch in-process (fake engine): shapes, limits and errors; every body is checked
against OpenAI's ``OpenAIFile``/``Batch`` schemas by the conformance check."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.services.filtering import manage
from cerulean.settings import Settings
from tests.conformance.recorder import record_responses
from tests.conftest import KEY1, KEY2

V = {"api-version": "2024-10-21"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path / "home",
        key1=KEY1,  # type: ignore[arg-type]
        key2=KEY2,  # type: ignore[arg-type]
        batch_file_max_bytes=4096,
        max_files=5,
        batch_poll_interval=0.05,
    )
    with TestClient(
        create_app(settings, {"fake-model": FakeEngine()}), raise_server_exceptions=False
    ) as client:
        record_responses(client)
        client.headers["api-key"] = KEY1
        yield client


def upload(
    client: TestClient, content: bytes, purpose: str = "batch", path: str = "/openai/files"
) -> Any:
    params = V if path == "/openai/files" else None
    return client.post(
        path, params=params, data={"purpose": purpose}, files={"file": ("in.jsonl", content)}
    )


def chat_line(i: int, model: str = "gpt-4") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return json.dumps(
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def test_upload_is_written_to_the_files_directory(app: TestClient, tmp_path: Path) -> None:
    answer = upload(app, b"hello\n")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "file" and body["bytes"] == 6 and body["status"] == "processed"
    assert (tmp_path / "home" / "files" / body["id"]).read_bytes() == b"hello\n"
    assert not list((tmp_path / "home" / "files").glob(".*.part"))
    assert app.get(f"/openai/files/{body['id']}/content", params=V).content == b"hello\n"
    assert app.get(f"/openai/v1/files/{body['id']}").json()["id"] == body["id"]
    gone = app.delete(f"/openai/v1/files/{body['id']}")
    assert gone.json() == {"id": body["id"], "object": "file", "deleted": True}
    missing = app.get(f"/openai/files/{body['id']}", params=V)
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_batch_file_limit_and_file_count_limit(app: TestClient, tmp_path: Path) -> None:
    too_big = upload(app, b"x" * 5000)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "file_too_large"
    assert upload(app, b"x" * 5000, purpose="fine-tune").status_code == 200  # its own limit
    for _ in range(4):
        assert upload(app, b"{}").status_code == 200
    refused = upload(app, b"{}")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "file_limit_exceeded"
    assert not list((tmp_path / "home" / "files").glob(".*.part"))


def test_upload_errors(app: TestClient) -> None:
    assert upload(app, b"{}", purpose="vision").json()["error"]["param"] == "purpose"
    no_file = app.post(
        "/openai/files", params=V, data={"purpose": "batch"}, files={"x": ("a", b"1")}
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    not_form = app.post("/openai/files", params=V, json={"purpose": "batch"})
    assert not_form.status_code == 400
    expiry = app.post(
        "/openai/files",
        params=V,
        data={
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "60",
        },
        files={"file": ("in.jsonl", b"{}")},
    )
    assert expiry.json()["error"]["param"] == "expires_after.seconds"


def test_the_json_body_limit_still_holds_elsewhere(app: TestClient) -> None:
    huge = b'{"messages": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    answer = app.post("/openai/deployments/gpt-4/chat/completions", params=V, content=huge)
    assert answer.status_code == 413


def wait(app: TestClient, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = app.get(f"/openai/v1/batches/{batch_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_batch_runs_on_the_fake_engine(app: TestClient) -> None:
    file_id = upload(app, "\n".join(chat_line(i) for i in range(6)).encode()).json()["id"]
    created = app.post(
        "/openai/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"job": "nightly"},
            "output_expires_after": {"anchor": "created_at", "seconds": 7200},
        },
    )
    assert created.status_code == 200, created.text
    done = wait(app, created.json()["id"])
    assert done["status"] == "completed" and done["request_counts"] == {
        "total": 6,
        "completed": 6,
        "failed": 0,
    }
    assert done["metadata"] == {"job": "nightly"} and done["model"] == "gpt-4"
    out = app.get(f"/openai/v1/files/{done['output_file_id']}").json()
    assert out["purpose"] == "batch_output" and out["expires_at"] == out["created_at"] + 7200
    rows = [
        json.loads(r) for r in app.get(f"/openai/v1/files/{out['id']}/content").text.splitlines()
    ]
    assert sorted(r["custom_id"] for r in rows) == [f"c{i}" for i in range(6)]
    listed = app.get("/openai/batches", params={**V, "limit": 1}).json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == done["id"]
    assert app.post(f"/openai/batches/{done['id']}/cancel", params=V).status_code == 409


def test_a_line_that_fails_goes_to_the_error_file(app: TestClient) -> None:
    bad = json.dumps(
        {
            "custom_id": "bad",
            "method": "POST",
            "url": "/chat/completions",
            "body": {"model": "gpt-4", "messages": "nope"},
        }
    )
    file_id = upload(app, (chat_line(0) + "\n" + bad).encode()).json()["id"]
    created = app.post(
        "/openai/batches",
        params=V,
        json={
            "input_file_id": file_id,
            "endpoint": "/chat/completions",
            "completion_window": "24h",
        },
    )
    done = wait(app, created.json()["id"])
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    rows = [
        json.loads(r)
        for r in app.get(
            f"/openai/files/{done['error_file_id']}/content", params=V
        ).text.splitlines()
    ]
    assert [r["custom_id"] for r in rows] == ["bad"]
    assert rows[0]["response"]["status_code"] == 400 and "error" in rows[0]["response"]["body"]


def test_responses_lines_run_through_the_responses_api(app: TestClient) -> None:
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": "gpt-4o", "input": "hi", "max_output_tokens": 16},
            }
        )
        for i in range(3)
    ]
    file_id = upload(app, "\n".join(lines).encode()).json()["id"]
    created = app.post(
        "/openai/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/responses", "completion_window": "24h"},
    )
    done = wait(app, created.json()["id"])
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}, done
    out = app.get(f"/openai/v1/files/{done['output_file_id']}/content").text.splitlines()
    bodies = [json.loads(row)["response"]["body"] for row in out]
    assert {b["object"] for b in bodies} == {"response"}
    assert all(b["status"] in ("completed", "incomplete") for b in bodies)


def test_chat_lines_are_filtered_by_their_deployments_policy(app: TestClient) -> None:
    """A batch line's prompt on a blocklist gets the online 400 as its response (an error
    line), and the other lines run: batch lines are filtered as online chat is."""
    store = app.app.state.cerulean.store  # type: ignore[attr-defined]
    manage.put_blocklist(store, "words", None)
    manage.put_item(store, "words", "w1", "zanzibar", False)
    manage.put_policy(
        store,
        "strict",
        {
            "basePolicyName": "Microsoft.DefaultV2",
            "customBlocklists": [{"blocklistName": "words", "blocking": True, "source": "Prompt"}],
        },
    )
    store.put_deployment(replace(store.get_deployment("gpt-4"), rai_policy="strict"))
    blocked = json.loads(chat_line(1))
    blocked["body"]["messages"][0]["content"] = "Tell me about Zanzibar"
    file_id = upload(app, (chat_line(0) + "\n" + json.dumps(blocked)).encode()).json()["id"]
    created = app.post(
        "/openai/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    done = wait(app, created.json()["id"])
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}, done
    errors = app.get(f"/openai/v1/files/{done['error_file_id']}/content").text.splitlines()
    row = json.loads(errors[0])
    assert row["custom_id"] == "c1" and row["response"]["status_code"] == 400
    error = row["response"]["body"]["error"]
    assert error["code"] == "content_filter"
    assert error["innererror"]["content_filter_result"]["custom_blocklists"]["filtered"] is True
    out = app.get(f"/openai/v1/files/{done['output_file_id']}/content").text.splitlines()
    answer = json.loads(out[0])["response"]["body"]
    assert answer["prompt_filter_results"][0]["content_filter_results"]["custom_blocklists"] == {
        "filtered": False,
        "details": [],
    }
