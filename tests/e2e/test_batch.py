"""Files and Batch against real servers with the real model, driven by openai 1.x.

``files.create`` → ``batches.create`` → poll → ``files.content``: each ``custom_id`` once in the
output; each malformed input file fails with its Azure code; cancel mid-run; ``kill -9``
mid-run and a restart on the same home resume without losing or repeating a line; two servers
on one PostgreSQL finish one batch together. Answers are kept to a few tokens.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI
from openai.types import Batch

from tests.conformance.recorder import recording_client
from tests.e2e.conftest import PROGRAMS, ROOT, Server

pytestmark = pytest.mark.slow

ENV = {
    "CERULEAN_BATCH_POLL_INTERVAL": "0.2",
    "CERULEAN_BATCH_MAX_LINES": "300",
    "CERULEAN_BATCH_TOKEN_LIMIT": "1000000",
}
TERMINAL = ("completed", "failed", "cancelled", "expired")


def line(i: int, *, model: str = "gpt-4", url: str = "/chat/completions", tokens: int = 2) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Count to {i}."}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    return json.dumps({"custom_id": f"task-{i}", "method": "POST", "url": url, "body": body})


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def azure(server: Server) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key=server.key1,
        api_version="2024-10-21",
        max_retries=0,
        http_client=recording_client(timeout=60),
    )


def v1(server: Server) -> OpenAI:
    return OpenAI(
        base_url=f"{server.endpoint}openai/v1/",
        api_key=server.key1,
        max_retries=0,
        http_client=recording_client(timeout=60),
    )


def submit(
    client: AzureOpenAI | OpenAI, content: bytes, endpoint: str = "/chat/completions"
) -> Batch:
    uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def wait(
    client: AzureOpenAI | OpenAI,
    batch_id: str,
    until: tuple[str, ...] = TERMINAL,
    timeout: float = 300,
    done_at_least: int = 0,
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        counts = batch.request_counts
        done = 0 if counts is None else counts.completed + counts.failed
        if batch.status in until and done >= done_at_least:
            return batch
        if batch.status in TERMINAL and batch.status not in until:
            raise AssertionError(f"batch ended {batch.status}: {batch}")
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout}s"
        time.sleep(0.2)


def output_lines(client: AzureOpenAI | OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return [json.loads(row) for row in text.splitlines() if row.strip()]


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(home=tmp_path_factory.mktemp("batch") / "home", env=ENV).start()
    yield running
    running.stop()


def test_a_200_line_batch_completes_each_custom_id_once(batch_server: Server) -> None:
    client = azure(batch_server)
    batch = submit(client, jsonl([line(i) for i in range(200)]))
    assert batch.status == "validating" and batch.completion_window == "24h"
    assert batch.expires_at == batch.created_at + 24 * 3600
    done = wait(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (200, 200)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    rows = output_lines(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"task-{i}" for i in range(200))
    first = rows[0]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    response = first["response"]
    assert response["status_code"] == 200 and response["request_id"]
    body = response["body"]
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 2
    assert body["prompt_filter_results"][0]["prompt_index"] == 0  # Azure's annotations
    assert "content_filter_results" in body["choices"][0]
    assert output_lines(client, done.error_file_id) == []  # produced even when empty (Azure)
    # The plain OpenAI client sees the same batch and files on /openai/v1.
    plain = v1(batch_server)
    assert plain.batches.retrieve(batch.id).status == "completed"
    assert batch.id in [b.id for b in plain.batches.list(limit=100)]
    outputs = plain.files.list(purpose="batch_output")
    assert done.output_file_id in [f.id for f in outputs]


def test_files_upload_list_paginate_retrieve_delete(batch_server: Server) -> None:
    client = v1(batch_server)
    made = [
        client.files.create(file=(f"f{i}.jsonl", jsonl([line(i)])), purpose="fine-tune")
        for i in range(3)
    ]
    assert all(re.fullmatch(r"file-[0-9a-f]{32}", f.id) for f in made)
    assert made[0].bytes == len(jsonl([line(0)])) and made[0].status == "processed"
    page = client.files.list(purpose="fine-tune", limit=2)
    assert len(page.data) == 2 and page.has_more
    ids = [f.id for f in client.files.list(purpose="fine-tune")]  # auto-paginates
    assert {f.id for f in made} <= set(ids) and len(ids) == len(set(ids))
    assert client.files.retrieve(made[1].id).filename == "f1.jsonl"
    assert client.files.content(made[1].id).content == jsonl([line(1)])
    expiring = client.files.create(
        file=("e.jsonl", b"{}\n"),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 1_209_600},
    )
    assert expiring.expires_at == expiring.created_at + 1_209_600
    deleted = client.files.delete(made[2].id)
    assert deleted.deleted and deleted.id == made[2].id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made[2].id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("x.jsonl", b"{}"), purpose="vision")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "purpose"  # type: ignore[index]


MALFORMED = {
    "invalid_json_line": [line(0), "{not json"],
    "url_mismatch": [line(0), line(1, url="/v1/completions")],
    "model_not_found": [line(0, model="no-such-deployment")],
    "duplicate_custom_id": [line(0), line(0)],
    "model_mismatch": [line(0), line(1, model="gpt-35-turbo")],
    "empty_batch": ["", "   "],
    "too_many_tasks": [line(i) for i in range(301)],
    "token_limit_exceeded": [line(0, tokens=2_000_000)],
}


def test_each_malformed_input_fails_with_its_azure_code(batch_server: Server) -> None:
    client = azure(batch_server)
    started = {code: submit(client, jsonl(rows)).id for code, rows in MALFORMED.items()}
    started["empty_file"] = submit(client, b"").id
    for code, batch_id in started.items():
        failed = wait(client, batch_id, until=("failed",), timeout=60)
        assert failed.errors is not None and failed.errors.data, code
        assert failed.errors.data[0].code == code, (code, failed.errors)
        assert failed.failed_at is not None
    wrong = client.batches.retrieve(started["url_mismatch"]).errors
    assert wrong is not None and wrong.data[0].line == 2


def test_create_time_refusals(batch_server: Server) -> None:
    client = azure(batch_server)
    uploaded = client.files.create(file=("in.jsonl", jsonl([line(0)])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert window.value.body["param"] == "completion_window"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-" + "0" * 32, endpoint="/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_mid_run(batch_server: Server) -> None:
    client = azure(batch_server)
    batch = submit(client, jsonl([line(i, tokens=24) for i in range(120)]))
    wait(client, batch.id, until=("in_progress",), done_at_least=5)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    done = wait(client, batch.id, until=("cancelled",), timeout=120)
    assert done.request_counts is not None
    finished = done.request_counts.completed
    assert 5 <= finished < 120
    rows = output_lines(client, done.output_file_id)
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == len(set(ids)) == finished
    assert client.batches.cancel(batch.id).status == "cancelled"  # idempotent


def _counted_kill(server: Server, client: AzureOpenAI, batch_id: str, at_least: int) -> int:
    before = wait(client, batch_id, until=("in_progress",), done_at_least=at_least)
    assert server.process is not None
    server.process.kill()  # SIGKILL: nothing gets to clean up
    server.process.wait(timeout=30)
    counts = before.request_counts
    assert counts is not None
    return counts.completed


def test_kill_9_mid_run_and_restart_resumes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home=home, env=ENV).start()
    total = 100
    try:
        client = azure(server)
        batch = submit(client, jsonl([line(i, tokens=8) for i in range(total)]))
        seen = _counted_kill(server, client, batch.id, at_least=20)
        assert seen < total, "the batch finished before the kill"
        server = Server(home=home, env=ENV).start()
        client = azure(server)
        resumed = client.batches.retrieve(batch.id)
        assert resumed.request_counts is not None
        kept = resumed.request_counts.completed
        assert kept >= seen  # every line checkpointed before the kill is still there
        done = wait(client, batch.id)
        assert done.status == "completed"
        rows = output_lines(client, done.output_file_id)
        ids = [r["custom_id"] for r in rows]
        assert len(ids) == len(set(ids)) == total
        print(f"kill -9: {seen} lines seen done before the kill, {kept} after restart, {total} out")
    finally:
        server.stop()


def _admitted(server: Server) -> float:
    text = httpx.get(f"{server.endpoint}metrics", headers={"api-key": server.key1}, timeout=10).text
    found = re.findall(
        r"^cerulean_engine_requests_admitted_total\{[^}]*\} ([0-9.e+]+)$", text, re.M
    )
    return sum(float(v) for v in found)


def test_two_servers_on_one_postgres_share_one_batch(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    env = {
        **ENV,
        "CERULEAN_DATABASE_URL": postgres_schema_url,
        "CERULEAN_FILES_DIR": str(tmp_path / "files"),
        "CERULEAN_KEY1": secrets.token_hex(16),
        "CERULEAN_KEY_SECRET": secrets.token_hex(32),
        "CERULEAN_BATCH_WIDTH": "4",
    }
    servers = [Server(home=tmp_path / f"home-{n}", env=env) for n in ("a", "b")]
    try:
        for server in servers:
            server.start()
        before = [_admitted(s) for s in servers]
        total = 60
        client = azure(servers[0])
        batch = submit(client, jsonl([line(i, tokens=8) for i in range(total)]))
        done = wait(azure(servers[1]), batch.id)
        assert done.status == "completed"
        rows = output_lines(azure(servers[1]), done.output_file_id)
        ids = [r["custom_id"] for r in rows]
        assert len(ids) == len(set(ids)) == total
        worked = [_admitted(s) - b for s, b in zip(servers, before, strict=True)]
        assert all(w > 0 for w in worked), worked  # both replicas ran lines
    finally:
        for server in servers:
            server.stop()


def test_azures_batch_quickstart_runs_unchanged(batch_server: Server, tmp_path: Path) -> None:
    """docs/batch.md's quickstart (the docs' own text, kept in programs/)."""
    program = PROGRAMS / "batch_quickstart.py"
    docs = (ROOT / "docs" / "batch.md").read_text()
    text = program.read_text().split('"""\n\n', 1)[1]
    assert "".join(text.split()) in "".join(docs.split())  # the same code (formatting aside)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "OPENAI_"))}
    env.update(
        {"AZURE_OPENAI_ENDPOINT": batch_server.endpoint, "AZURE_OPENAI_API_KEY": batch_server.key1}
    )
    done = subprocess.run(
        [sys.executable, str(program)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Status: completed" in done.stdout
    assert done.stdout.count('"custom_id": "task-') == 3
    assert '"status_code": 200' in done.stdout
