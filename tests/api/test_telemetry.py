"""Usage accounting, OpenTelemetry and the JSON request line on the in-process app with the fake
engine (issue 16 items 3-5). The real-server checks are in tests/e2e/test_telemetry.py."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.engines.fake_embeddings import FakeEmbedder
from cerulean.logformat import JsonFormatter
from cerulean.services.telemetry import build_telemetry
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord, UsageRecord
from tests.conftest import KEY1, KEY2
from tests.otlp import Receiver, receiver

CHAT = "/openai/deployments/{}/chat/completions?api-version=2024-10-21"
COMPLETIONS = "/openai/deployments/{}/completions?api-version=2024-10-21"
EMBEDDINGS = "/openai/deployments/{}/embeddings?api-version=2024-10-21"
SECRET_PROMPT = "the-prompt-nonce-4f9a"


def _app(settings: Settings) -> Any:
    return create_app(
        settings,
        {"fake-model": FakeEngine(context_length=256)},
        embedders={"fake-embed": FakeEmbedder()},
    )


def _deploy(state: AppState, name: str, model: str, capacity: int) -> None:
    now = datetime.now(timezone.utc)
    state.store.put_deployment(DeploymentRecord(name, model, "1", capacity, "Standard", now))


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"usage_flush_interval": 0.05})


def _rows(state: AppState) -> list[UsageRecord]:
    return state.store.usage(datetime.now(timezone.utc) - timedelta(hours=1))


def _wait_rows(state: AppState, requests: int, timeout: float = 10) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(state)
        if sum(r.requests for r in rows) >= requests or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


# -- usage accounting ---------------------------------------------------------------------------


def _one(http: TestClient, rng: random.Random, i: int) -> tuple[tuple[str, str, int], int, int]:
    """One random request; (deployment, caller, status) and the usage the client got."""
    key, caller = (KEY1, "key1") if i % 3 else (KEY2, "key2")
    headers = {"api-key": key}
    kind = rng.choice(["chat", "chat-stream", "completion", "completion-stream", "embed", "bad"])
    deployment = "tiny" if i % 10 == 7 else "roomy"
    words = " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(rng.randint(1, 6)))
    if kind.startswith("chat") or kind == "bad":
        body: dict[str, Any] = {"messages": [{"role": "user", "content": words}]}
        body["max_tokens"] = rng.randint(1, 4) if kind != "bad" else 100_000  # bad: too long
        url = CHAT.format(deployment)
    elif kind.startswith("completion"):
        body = {"prompt": words, "max_tokens": rng.randint(1, 4)}
        url = COMPLETIONS.format(deployment)
    else:
        body, url = {"input": words}, EMBEDDINGS.format("emb")
        deployment = "emb"
    if kind.endswith("stream"):
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    response = http.post(url, json=body, headers=headers)
    got = {"prompt_tokens": 0, "completion_tokens": 0}
    if response.status_code == 200 and kind.endswith("stream"):
        events = [
            json.loads(line[6:])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        (last,) = [e for e in events if e.get("usage")]
        got = last["usage"]
    elif response.status_code == 200:
        got = response.json()["usage"]
    return (
        (deployment, caller, response.status_code),
        got["prompt_tokens"],
        got.get("completion_tokens", 0),
    )


def test_usage_rows_match_what_100_mixed_clients_received(fast: Settings) -> None:
    """Streamed and not, chat, completions and embeddings, 400s and 429s, two keys: the
    per-minute rows add up to exactly the ``usage`` each client was given."""
    rng = random.Random(16)
    expected: Counter[tuple[str, str, int]] = Counter()
    tokens: Counter[tuple[str, str, int, str]] = Counter()
    with TestClient(_app(fast), raise_server_exceptions=False) as http:
        state: AppState = http.app.state.cerulean  # type: ignore[attr-defined]
        _deploy(state, "roomy", "fake-model", 1000)
        _deploy(state, "tiny", "fake-model", 1)  # 1 request per 10 s: 429s
        _deploy(state, "emb", "fake-embed", 1000)
        for i in range(100):
            key, prompt, completion = _one(http, rng, i)
            expected[key] += 1
            tokens[(*key, "prompt")] += prompt
            tokens[(*key, "completion")] += completion
        unknown = http.post(CHAT.format("nope"), json={"messages": []}, headers={"api-key": KEY1})
        assert unknown.status_code == 404
        rows = _wait_rows(state, 100)
    got: Counter[tuple[str, str, int]] = Counter()
    got_tokens: Counter[tuple[str, str, int, str]] = Counter()
    for row in rows:
        key = (row.deployment, row.caller, row.status)
        got[key] += row.requests
        got_tokens[(*key, "prompt")] += row.prompt_tokens
        got_tokens[(*key, "completion")] += row.completion_tokens
    assert got == expected  # the unknown deployment is not there: it names nothing
    assert +got_tokens == +tokens
    statuses = {status for _, _, status in expected}
    assert {200, 400, 429} <= statuses  # the mix really had errors of both kinds
    assert any(r.throttled for r in rows if r.status == 429)
    assert all(r.ttft_count == 0 for r in rows if r.status != 200)
    assert any(r.ttft_count for r in rows if r.operation == "chat_completion")


def test_usage_accounting_off_writes_nothing(settings: Settings) -> None:
    off = settings.model_copy(update={"usage_accounting": False})
    with TestClient(_app(off), raise_server_exceptions=False) as http:
        state: AppState = http.app.state.cerulean  # type: ignore[attr-defined]
        assert state.usage is None
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert http.post(CHAT.format("gpt-4o"), json=body, headers={"api-key": KEY1}).is_success
        time.sleep(0.2)
        assert _rows(state) == []


# -- OpenTelemetry ------------------------------------------------------------------------------


def test_telemetry_is_off_without_an_endpoint_and_imports_no_sdk() -> None:
    assert build_telemetry(Settings()) is None
    assert build_telemetry(Settings(otel_endpoint="http://x:4318", otel_sdk_disabled=True)) is None
    both_off = Settings(
        otel_endpoint="http://x:4318", otel_traces_exporter="none", otel_metrics_exporter="none"
    )
    assert build_telemetry(both_off) is None
    only_metrics = Settings(otel_endpoint="http://x:4318/", otel_traces_exporter="none")
    assert only_metrics.otel_traces_url is None
    assert only_metrics.otel_metrics_url == "http://x:4318/v1/metrics"
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from cerulean.app import create_app\n"
        "from cerulean.engines.fake import FakeEngine\n"
        "from cerulean.settings import Settings\n"
        f"s = Settings(home={str(Settings().home)!r} + '-unused-{time.time_ns()}')\n"
        "app = create_app(s, {'fake-model': FakeEngine()})\n"
        "with TestClient(app) as c:\n"
        "    c.get('/healthz')\n"
        "    assert app.state.cerulean.telemetry is None\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry.sdk')]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


def _traced(settings: Settings, otlp: Receiver, *, capture: bool) -> Settings:
    return settings.model_copy(
        update={"otel_endpoint": otlp.endpoint, "otel_capture_content": capture}
    )


def test_spans_and_metrics_follow_the_genai_conventions(settings: Settings, otlp: Receiver) -> None:
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(_app(_traced(settings, otlp, capture=False))) as http:
        http.headers["api-key"] = KEY1
        body = {"messages": [{"role": "user", "content": SECRET_PROMPT}], "max_tokens": 3}
        traceparent = {"traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"}
        answer = http.post(CHAT.format("gpt-4o"), json=body, headers=traceparent)
        assert answer.status_code == 200
        streamed = http.post(CHAT.format("gpt-4o"), json={**body, "stream": True})
        assert streamed.status_code == 200
        refused = http.post(CHAT.format("gpt-4o"), json={**body, "max_tokens": 100_000})
        assert refused.status_code == 400
        embedded = http.post(EMBEDDINGS.format("text-embedding-ada-002"), json={"input": "x"})
        assert embedded.status_code == 200
    # The lifespan's end flushed both signals.
    spans = {s.span_id: s for s in otlp.spans}
    roots = [s for s in spans.values() if s.name.startswith(("chat ", "embeddings "))]
    assert sorted(s.name for s in roots) == ["chat gpt-4o"] * 3 + [
        "embeddings text-embedding-ada-002"
    ]
    first = next(s for s in roots if s.trace_id == parent_trace)
    assert first.parent_span_id == "00f067aa0ba902b7"  # the caller's traceparent
    usage = answer.json()["usage"]
    a = first.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "azure.ai.openai"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.model"] == "fake-model"
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == [answer.json()["choices"][0]["finish_reason"]]
    assert a["gen_ai.request.max_tokens"] == 3
    assert a["http.response.status_code"] == 200
    assert a["az.service_request_id"] == answer.headers["apim-request-id"]
    assert a["cerulean.caller"] == "key1"
    assert first.kind == 2  # SERVER
    assert first.resource["service.name"] == "cerulean"
    children = [s for s in spans.values() if s.parent_span_id == first.span_id]
    (generation,) = [c for c in children if c.name == "generation"]
    assert first.start <= generation.start <= generation.end <= first.end
    failed = next(s for s in roots if s.attributes["http.response.status_code"] == 400)
    assert failed.attributes["error.type"] == "400"
    for span in otlp.spans:  # content capture is off: no prompt, no answer anywhere
        assert "gen_ai.input.messages" not in span.attributes
        assert SECRET_PROMPT not in json.dumps(span.attributes)
    tokens = otlp.latest("gen_ai.client.token.usage")
    chat_tokens = {
        p.attributes["gen_ai.token.type"]: p
        for p in tokens
        if p.attributes["gen_ai.operation.name"] == "chat"
    }
    assert chat_tokens["input"].count == 2 and chat_tokens["output"].count == 2
    assert chat_tokens["input"].sum == 2 * usage["prompt_tokens"]
    assert chat_tokens["input"].unit == "{token}" and chat_tokens["input"].bounds[:3] == (
        1.0,
        4.0,
        16.0,
    )
    durations = otlp.latest("gen_ai.server.request.duration")
    assert sum(p.count for p in durations) == 4
    assert any(p.attributes.get("error.type") == "400" for p in durations)
    (ttft,) = [
        p
        for p in otlp.latest("gen_ai.server.time_to_first_token")
        if p.attributes["gen_ai.operation.name"] == "chat"
    ]
    assert ttft.count == 2 and ttft.unit == "s"
    assert otlp.latest("gen_ai.server.time_per_output_token")


def test_prompts_and_answers_only_when_capture_is_enabled(
    settings: Settings, otlp: Receiver
) -> None:
    with TestClient(_app(_traced(settings, otlp, capture=True))) as http:
        body = {"messages": [{"role": "user", "content": SECRET_PROMPT}], "max_tokens": 20}
        answer = http.post(CHAT.format("gpt-4o"), json=body, headers={"api-key": KEY1})
    (root,) = [s for s in otlp.spans if s.name == "chat gpt-4o"]
    inputs = json.loads(root.attributes["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}]
    (output,) = json.loads(root.attributes["gen_ai.output.messages"])
    text = answer.json()["choices"][0]["message"]["content"]
    assert output["parts"][0]["content"] == text and output["role"] == "assistant"


# -- the request line ---------------------------------------------------------------------------


def test_request_line_as_json_has_the_fields_and_no_secret(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="cerulean.access"),
        TestClient(_app(settings), raise_server_exceptions=False) as http,
    ):
        body = {"messages": [{"role": "user", "content": SECRET_PROMPT}], "max_tokens": 2}
        ok = http.post(CHAT.format("gpt-4o"), json=body, headers={"api-key": KEY2})
        http.post(CHAT.format("gpt-4o"), json=body, headers={"api-key": "0" * 32})
        bearer = {"authorization": f"Bearer {KEY1}"}
        http.post(CHAT.format("gpt-4o"), json={**body, "stream": True}, headers=bearer)
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == "cerulean.access"]
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 3
    first = entries[0]
    assert first["request_id"] == ok.headers["apim-request-id"]
    assert first["deployment"] == "gpt-4o" and first["operation"] == "chat_completion"
    assert first["status"] == 200 and first["caller"] == "key2"
    assert first["prompt_tokens"] == ok.json()["usage"]["prompt_tokens"]
    assert first["completion_tokens"] == ok.json()["usage"]["completion_tokens"]
    assert first["duration_ms"] >= first["ttft_ms"] >= 0
    assert first["api_version"] == "2024-10-21" and first["logger"] == "cerulean.access"
    assert entries[1]["status"] == 401 and entries[1]["caller"] is None
    assert entries[2]["caller"] == "key1" and entries[2]["ttft_ms"] is not None
    for line in lines:
        assert KEY1 not in line and KEY2 not in line and SECRET_PROMPT not in line
        assert "0" * 32 not in line


def test_a_remote_deployment_has_one_span_per_upstream_call(tmp_path: Path, otlp: Receiver) -> None:
    from tests.api.test_upstreams import settings_for, upstream
    from tests.engines.remote.fakes import FakeUpstream, Faults

    fake = FakeUpstream("vllm", faults=Faults(status=500, times=1)).start()
    try:
        settings = settings_for(tmp_path).model_copy(update={"otel_endpoint": otlp.endpoint})
        with TestClient(_app(settings), raise_server_exceptions=False) as http:
            state: AppState = http.app.state.cerulean  # type: ignore[attr-defined]
            state.store.put_upstream(upstream("up-a", fake))
            now = datetime.now(timezone.utc)
            record = DeploymentRecord("remote", "fake-model", "1", 1000, "Standard", now, ("up-a",))
            state.store.put_deployment(record)
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            failed = http.post(CHAT.format("remote"), json=body, headers={"api-key": KEY1})
            assert failed.status_code == 502
            time.sleep(0.7)  # the upstream's cooldown
            served = http.post(CHAT.format("remote"), json=body, headers={"api-key": KEY1})
            assert served.status_code == 200, served.text
    finally:
        fake.stop()
    roots = sorted(
        (s for s in otlp.spans if s.name == "chat remote"),
        key=lambda s: s.attributes["http.response.status_code"],
    )
    assert [r.attributes["http.response.status_code"] for r in roots] == [200, 502]
    for root, error in zip(roots, [None, "server_error"], strict=True):
        (call,) = [s for s in otlp.spans if s.parent_span_id == root.span_id and s.kind == 3]
        assert call.name == "upstream up-a" and call.attributes.get("error.type") == error
        assert call.attributes["server.address"] == f"127.0.0.1:{fake.port}"
        assert root.start <= call.start <= call.end <= root.end
    assert roots[1].status_code == 2  # ERROR: a 5xx
