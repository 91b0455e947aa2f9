"""Deployments served by upstreams, in-process: Azure's contract at the edge, whatever the
upstream (flavor-faithful fakes on loopback, with faults)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord, UpstreamRecord
from tests.api.test_chat import sse_events
from tests.conftest import KEY1, KEY2
from tests.engines.remote.fakes import FakeUpstream, Faults

URL = "/openai/deployments/remote/chat/completions?api-version=2024-10-21"
ASK = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 20}
NOW = datetime.now(timezone.utc)


def upstream(name: str, fake: FakeUpstream, **fields: Any) -> UpstreamRecord:
    model = "gpt-4o" if fake.azure else "fake-model"
    values: dict[str, Any] = {
        "name": name,
        "url": fake.url,
        "flavor": fake.flavor,
        "model": model,
        "api_key_env": None,
        "api_key_file": None,
        "max_concurrency": None,
        "weight": 1.0,
        "created_at": NOW,
    }
    values.update(fields)
    return UpstreamRecord(**values)


class Gateway:
    """The in-process app with upstream-backed deployment ``remote``."""

    def __init__(self, client: TestClient, fakes: list[FakeUpstream]) -> None:
        self.client = client
        self.fakes = fakes

    @property
    def state(self) -> AppState:
        state: AppState = self.client.app.state.cerulean  # type: ignore[attr-defined]
        return state

    def serve(self, *records: UpstreamRecord, capacity: int = 1000, name: str = "remote") -> None:
        for record in records:
            self.state.store.put_upstream(record)
        self.state.store.put_deployment(
            DeploymentRecord(
                name, "fake-model", "1", capacity, "Standard", NOW, tuple(r.name for r in records)
            )
        )

    def chat(self, body: dict[str, Any] | None = None, **extra: Any) -> Any:
        return self.client.post(URL, json={**(body or ASK), **extra})


def settings_for(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=tmp_path / "home",
        key1=KEY1,
        key2=KEY2,
        upstream_first_byte_timeout=3,
        upstream_read_timeout=2,
        upstream_cooldown=0.5,
        upstream_health_interval=60,
    )


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstream]]:
    started = [FakeUpstream("vllm").start(), FakeUpstream("vllm").start()]
    yield started
    for fake in started:
        fake.stop()


@pytest.fixture
def gateway(tmp_path: Path, fakes: list[FakeUpstream]) -> Iterator[Gateway]:
    app = create_app(settings_for(tmp_path), {"fake-model": FakeEngine()})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["api-key"] = KEY1
        yield Gateway(client, fakes)


def test_a_chat_goes_through_in_azures_shape(gateway: Gateway) -> None:
    gateway.serve(upstream("a", gateway.fakes[0]))
    response = gateway.chat()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["choices"][0]["message"]["content"] == "Hello from the upstream."
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert response.headers["x-ms-deployment-name"] == "remote"
    assert "x-ratelimit-remaining-tokens" in response.headers
    sent = gateway.fakes[0].bodies[-1]
    assert sent["model"] == "fake-model" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hi there"}]


def test_a_stream_keeps_azures_order_and_strips_the_usage_chunk(gateway: Gateway) -> None:
    gateway.serve(upstream("a", gateway.fakes[0]))
    response = gateway.chat(stream=True)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]
    assert chunks[1]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:] if c["choices"])
    assert text == "Hello from the upstream."
    assert all("usage" not in c for c in chunks)  # the client did not ask for it
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    with_usage = gateway.chat(stream=True, stream_options={"include_usage": True})
    last = json.loads(sse_events(with_usage.text)[-2])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 16


def test_tools_pass_through_natively(gateway: Gateway) -> None:
    gateway.serve(upstream("a", gateway.fakes[0]))
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    response = gateway.chat({"messages": history, "tools": [tool], "tool_choice": "auto"})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_upstream1" and json.loads(call["function"]["arguments"]) == {
        "city": "Paris"
    }
    sent = gateway.fakes[0].bodies[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


def test_a_parameter_the_flavor_cannot_honour_is_a_400(gateway: Gateway) -> None:
    ollama = FakeUpstream("ollama").start()
    try:
        gateway.serve(upstream("o", ollama))
        response = gateway.chat(n=2)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "n" and error["code"] == "unsupported_parameter"
        assert "remote" in error["message"] and ollama.bodies == []
    finally:
        ollama.stop()


def test_a_failing_upstream_is_retried_on_another_and_cooled_down(gateway: Gateway) -> None:
    bad, good = gateway.fakes
    bad.faults = Faults(status=500)
    gateway.serve(upstream("bad", bad), upstream("good", good))
    for _ in range(4):
        response = gateway.chat()
        assert response.status_code == 200, response.text
    metrics = gateway.client.get("/metrics").text
    assert 'cerulean_upstream_errors_total{kind="server_error",upstream="bad"}' in metrics
    assert len(bad.bodies) == 1  # cooled down after its failure: not asked again meanwhile


def test_every_upstream_down_is_a_503_with_the_shortest_cooldown(gateway: Gateway) -> None:
    first, second = gateway.fakes
    first.faults = Faults(status=429, retry_after_ms=4000)
    second.faults = Faults(status=503)
    gateway.serve(upstream("a", first), upstream("b", second))
    response = gateway.chat()
    assert response.status_code in (502, 503)
    assert "error" in response.json() and "detail" not in response.json()
    again = gateway.chat()
    assert again.status_code == 503
    assert again.json()["error"]["code"] == "ServiceUnavailable"
    assert 0 < int(again.headers["retry-after-ms"]) <= 4000


def test_a_stream_cut_after_the_first_byte_ends_with_an_error_event(gateway: Gateway) -> None:
    fake = gateway.fakes[0]
    fake.faults = Faults(cut_after=2)
    gateway.serve(upstream("a", fake))
    response = gateway.chat(stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] != "[DONE]"
    assert json.loads(events[-1])["error"]["code"] == "BadGateway"
    stats = gateway.client.get("/metrics").text
    assert 'cerulean_upstream_in_flight{upstream="a"} 0.0' in stats


def test_a_stall_before_the_first_byte_times_out_and_moves_on(gateway: Gateway) -> None:
    slow, fast = gateway.fakes
    slow.faults = Faults(stall_first_byte=10)
    gateway.serve(upstream("slow", slow, weight=1000.0), upstream("fast", fast))
    response = gateway.chat()
    assert response.status_code in (200, 504), response.text
    if response.status_code == 504:  # the whole first-byte budget went to the slow one
        assert response.json()["error"]["code"] == "GatewayTimeout"
    assert gateway.chat().status_code == 200  # the slow one is cooled down now


def test_an_azure_upstream_keeps_its_annotations(gateway: Gateway) -> None:
    azure = FakeUpstream("azure").start()
    try:
        gateway.serve(upstream("az", azure, api_key_env="FAKE_AZURE_KEY"))
        response = gateway.chat()
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["content_filter_results"]["hate"]["severity"] == "safe"
        assert azure.headers[-1].get("api-key") is None  # the variable is unset here
    finally:
        azure.stop()


FAULTS = {
    "refused": None,  # the upstream is stopped: connections are refused
    "stall before the first byte": Faults(stall_first_byte=5, times=1),
    "cut after 2 tokens": Faults(cut_after=2, times=1),
    "malformed line": Faults(malformed_after=1, times=1),
    "500": Faults(status=500, times=1),
    "429": Faults(status=429, retry_after_ms=700, times=1),
    "stall mid-answer": Faults(stall_after=2, stall_seconds=5, times=1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_each_fault_is_answered_in_azures_shape_and_leaks_nothing(
    gateway: Gateway, fault: str, stream: bool
) -> None:
    """One upstream, one fault: what the client sees, that the server stays healthy, that no
    count leaks, and that the upstream serves again once the fault and its cooldown are over."""
    fake = gateway.fakes[0]
    gateway.serve(upstream("only", fake))
    planned = FAULTS[fault]
    if planned is None:
        fake.stop()
    else:
        fake.faults = dataclasses.replace(planned)  # a fresh count of failing requests
    response = gateway.chat(stream=stream)
    midway = fault in ("cut after 2 tokens", "malformed line", "stall mid-answer")
    if stream and midway:  # after the first byte: the stream ends with Azure's error event
        assert response.status_code == 200
        events = sse_events(response.text)
        assert events[-1] != "[DONE]" and json.loads(events[-1])["error"]["code"] in (
            "BadGateway",
            "GatewayTimeout",
        )
    else:
        assert response.status_code in (502, 503, 504), response.text
        error = response.json()["error"]
        assert set(error) == {"code", "message"} and "retry-after-ms" in response.headers
    assert gateway.client.get("/healthz").status_code == 200
    metrics = gateway.client.get("/metrics").text
    assert 'cerulean_upstream_in_flight{upstream="only"} 0.0' in metrics
    router = gateway.state.pool.gateway.router  # type: ignore[union-attr]
    import asyncio

    assert asyncio.run(router.state.outstanding(["only"])) == {"only": 0}
    if FAULTS[fault] is None:
        fake.start()
    import time

    deadline = time.monotonic() + 10
    while True:  # the cooldown (0.5 s, doubling) ends and the upstream answers again
        again = gateway.chat(stream=stream)
        if again.status_code == 200 and (not stream or sse_events(again.text)[-1] == "[DONE]"):
            break
        assert time.monotonic() < deadline, again.text
        time.sleep(0.3)


@pytest.mark.parametrize(
    "flavor", ["openai", "llama-server", "vllm", "sglang", "ollama", "azure", "cerulean"]
)
def test_every_flavor_answers_json_and_streams(gateway: Gateway, flavor: str) -> None:
    fake = FakeUpstream(flavor).start()
    try:
        gateway.serve(upstream("x", fake, api_key_env="CERULEAN_TEST_FLAVOR_KEY"))
        body = gateway.chat().json()
        assert body["choices"][0]["message"]["content"] == "Hello from the upstream."
        assert body["usage"]["total_tokens"] == 16
        streamed = sse_events(gateway.chat(stream=True).text)
        assert streamed[-1] == "[DONE]"
        if fake.azure:
            path_has_deployment = True  # the deployment is in the path, not the body
            assert "model" not in fake.bodies[-1] and path_has_deployment
        else:
            assert fake.bodies[-1]["model"] == "fake-model"
    finally:
        fake.stop()


def test_the_upstream_key_is_read_from_its_variable_and_never_stored(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = gateway.fakes[0]
    monkeypatch.setenv("CERULEAN_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    gateway.serve(upstream("keyed", fake, api_key_env="CERULEAN_TEST_UPSTREAM_KEY"))
    assert gateway.chat().status_code == 200
    assert fake.headers[-1]["authorization"] == "Bearer sk-upstream-secret"
    stored = gateway.state.store.get_upstream("keyed")
    assert stored is not None and "sk-upstream-secret" not in repr(stored)


def test_models_of_upstream_backed_deployments_are_listed(gateway: Gateway) -> None:
    record = upstream("a", gateway.fakes[0])
    store = gateway.state.store
    store.put_upstream(record)
    store.put_deployment(DeploymentRecord("far", "far-model", "1", 10, "Standard", NOW, ("a",)))
    store.put_deployment(DeploymentRecord("lost", "lost-model", "1", 10, "Standard", NOW, ("x",)))
    url = "/openai/models?api-version=2024-10-21"
    listed = {m["id"]: m for m in gateway.client.get(url).json()["data"]}
    assert "fake-model" in listed and "far-model" in listed
    assert "lost-model" not in listed  # its upstream is not registered: nothing serves it
    assert listed["far-model"]["capabilities"]["chat_completion"] is True
    one = gateway.client.get("/openai/models/far-model?api-version=2024-10-21")
    assert one.status_code == 200 and one.json()["id"] == "far-model"
    missing = gateway.client.get("/openai/models/lost-model?api-version=2024-10-21")
    assert missing.status_code == 404
