"""Usage accounting, OpenTelemetry and JSON request lines against a real `cerulean serve` with
the real model (issue 16 items 3-5): an OTLP receiver on loopback decodes what the server
exports; the usage rows in its store match what openai 1.x clients were given; the ARM
``usages`` route through Microsoft's SDK; ``cerulean usage``; and ``kill -9`` mid-load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from openai import AzureOpenAI, BadRequestError, RateLimitError

from cerulean.store import SqlStore
from cerulean.store.base import UsageRecord
from tests.conftest import KEY1, KEY2
from tests.e2e.conftest import Server
from tests.e2e.test_control_plane import GROUP, HTTP, SUBSCRIPTION, StaticToken
from tests.otlp import Receiver, receiver

pytestmark = pytest.mark.slow

ADMIN = "telemetry-admin-token-0b7e5c2a9f4d"
NONCE = "prompt-nonce-e2e-7c1d"
ARM = (
    "/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/"
    "cerulean/deployments/{name}?api-version=2023-05-01"
)


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, otlp: Receiver) -> Iterator[Server]:
    env = {
        "CERULEAN_KEY1": KEY1,
        "CERULEAN_KEY2": KEY2,
        "CERULEAN_ADMIN_TOKEN": ADMIN,
        "CERULEAN_RECONCILE_INTERVAL": "0.5",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    args = ["--log-format", "json", "--log-level", "info", "--parallel", "4"]
    server = Server(
        home=tmp_path_factory.mktemp("telemetry") / "home", extra_args=args, env=env
    ).start()
    model = _arm(server, "GET", "gpt-4o").json()["properties"]["model"]
    for name, capacity in (("tiny", 1), ("load", 1000)):
        body = {
            "sku": {"name": "Standard", "capacity": capacity},
            "properties": {"model": {"format": "OpenAI", "name": model["name"]}},
        }
        assert _arm(server, "PUT", name, body).status_code in (200, 201)
    yield server
    server.stop()


def _arm(server: Server, method: str, name: str, body: Any = None) -> httpx.Response:
    url = server.endpoint.rstrip("/") + ARM.format(s=SUBSCRIPTION, g=GROUP, name=name)
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, url, json=body, headers=headers, timeout=60)


def client(server: Server, key: str = KEY1) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=key, api_version="2024-10-21", max_retries=0
    )


def rows(server: Server) -> list[UsageRecord]:
    store = SqlStore(f"sqlite:///{server.home / 'cerulean.db'}")
    try:
        return store.usage(datetime.now(timezone.utc) - timedelta(hours=1))
    finally:
        store.close()


def tally(found: list[UsageRecord]) -> Counter[tuple[str, str, int, str]]:
    out: Counter[tuple[str, str, int, str]] = Counter()
    for row in found:
        key = (row.deployment, row.caller, row.status)
        out[(*key, "requests")] += row.requests
        out[(*key, "prompt")] += row.prompt_tokens
        out[(*key, "completion")] += row.completion_tokens
    return out


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{NONCE} {text}"}]


def test_spans_carry_the_engine_phases_and_metrics_arrive(served: Server, otlp: Receiver) -> None:
    stream = client(served).chat.completions.create(
        model="gpt-4o",
        messages=ask("Say hello."),
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]

    def root_with_children() -> bool:
        roots = [s for s in otlp.spans if s.name == "chat gpt-4o"]
        return bool(roots) and len([s for s in otlp.spans if s.parent_span_id]) >= 3

    otlp.wait_for(root_with_children)
    (root,) = [s for s in otlp.spans if s.name == "chat gpt-4o"]
    assert root.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert root.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert root.attributes["gen_ai.response.model"] == "gemma-3-270m"
    phases = {s.name: s for s in otlp.spans if s.parent_span_id == root.span_id}
    queue, prompt, generation = (phases[n] for n in ("queue", "prompt_processing", "generation"))
    assert root.start <= queue.start <= queue.end <= prompt.start
    assert prompt.start <= prompt.end <= generation.start <= generation.end <= root.end
    assert all(s.trace_id == root.trace_id for s in phases.values())

    def metrics() -> bool:
        names = {p.metric for p in otlp.points if p.attributes.get("gen_ai.request.model")}
        return {
            "gen_ai.client.token.usage",
            "gen_ai.server.request.duration",
            "gen_ai.server.time_to_first_token",
            "gen_ai.server.time_per_output_token",
        } <= names

    otlp.wait_for(metrics)
    (ttft,) = [
        p
        for p in otlp.latest("gen_ai.server.time_to_first_token")
        if p.attributes["gen_ai.request.model"] == "gpt-4o"
    ]
    assert ttft.count >= 1 and 0 < ttft.sum < 60
    assert ttft.attributes["gen_ai.response.model"] == "gemma-3-270m"


def test_usage_rows_match_what_the_clients_received(served: Server) -> None:
    time.sleep(1.5)  # what earlier tests did is flushed
    before = tally(rows(served))
    expected: Counter[tuple[str, str, int, str]] = Counter()

    def count(deployment: str, caller: str, status: int, prompt: int, completion: int) -> None:
        expected[(deployment, caller, status, "requests")] += 1
        expected[(deployment, caller, status, "prompt")] += prompt
        expected[(deployment, caller, status, "completion")] += completion

    one, two = client(served, KEY1), client(served, KEY2)
    answer = one.chat.completions.create(model="gpt-4o", messages=ask("Hi."), max_tokens=3)
    assert answer.usage is not None
    count("gpt-4o", "key1", 200, answer.usage.prompt_tokens, answer.usage.completion_tokens)
    stream = two.chat.completions.create(
        model="gpt-4o",
        messages=ask("Count."),
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    last = [c.usage for c in stream if c.usage is not None][-1]
    count("gpt-4o", "key2", 200, last.prompt_tokens, last.completion_tokens)
    legacy = two.completions.create(model="gpt-35-turbo", prompt=f"{NONCE} Once", max_tokens=2)
    assert legacy.usage is not None
    count("gpt-35-turbo", "key2", 200, legacy.usage.prompt_tokens, legacy.usage.completion_tokens)
    vectors = one.embeddings.create(model="text-embedding-ada-002", input=f"{NONCE} words")
    count("text-embedding-ada-002", "key1", 200, vectors.usage.prompt_tokens, 0)
    with pytest.raises(BadRequestError):
        one.chat.completions.create(model="gpt-4o", messages=ask("x"), max_tokens=10**6)
    count("gpt-4o", "key1", 400, 0, 0)
    statuses = []
    for _ in range(3):  # capacity 1: one request per 10 s
        try:
            tiny = one.chat.completions.create(model="tiny", messages=ask("Hi."), max_tokens=2)
            assert tiny.usage is not None
            statuses.append(200)
            count("tiny", "key1", 200, tiny.usage.prompt_tokens, tiny.usage.completion_tokens)
        except RateLimitError:
            statuses.append(429)
            count("tiny", "key1", 429, 0, 0)
    assert 429 in statuses
    deadline = time.monotonic() + 15
    while True:
        added = tally(rows(served))
        added.subtract(before)
        if +added == +expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert +added == +expected


def test_arm_usages_through_the_management_sdk(served: Server) -> None:
    sdk = CognitiveServicesManagementClient(
        StaticToken(ADMIN),  # type: ignore[arg-type]
        SUBSCRIPTION,
        base_url=served.endpoint.rstrip("/"),
    )
    for _ in range(3):  # the current minute's count: again if the minute turned meanwhile
        minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        answer = client(served).chat.completions.create(
            model="load", messages=ask("Hi."), max_tokens=2
        )
        time.sleep(1.5)  # one flush
        listed = sdk.accounts.list_usages(GROUP, "cerulean", **HTTP).value
        if datetime.now(timezone.utc).replace(second=0, microsecond=0) == minute:
            break
    usages = {u.name.value: u for u in listed}
    assert answer.usage is not None
    tokens = usages["OpenAI.Standard.load.Tokens"]
    assert tokens.limit == 1_000_000 and tokens.unit == "Count" and tokens.quota_period == "PT1M"
    assert tokens.current_value >= answer.usage.total_tokens
    assert tokens.status == "Included" and tokens.next_reset_time
    assert usages["OpenAI.Standard.load.Requests"].current_value >= 1
    requests = usages["OpenAI.Standard.tiny.Requests"]
    assert requests.limit == 6 and requests.name.localized_value == "Requests Per Minute - tiny"
    assert "OpenAI.Standard.gpt-4o.Tokens" in usages
    only = sdk.accounts.list_usages(
        GROUP, "cerulean", filter="name.value eq 'OpenAI.Standard.tiny.Tokens'", **HTTP
    ).value
    assert [u.name.value for u in only] == ["OpenAI.Standard.tiny.Tokens"]


def test_cerulean_usage_lists_deployments_and_callers(served: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", "usage", "--json", "--since", "1h"]
        + ["--deployment", "gpt-4o", "--home", str(served.home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["usage"]
    assert {entry["deployment"] for entry in listed} == {"gpt-4o"}
    callers = {entry["caller"]: entry for entry in listed}
    assert {"key1", "key2"} <= set(callers)
    assert callers["key1"]["errors"] >= 1  # the 400 above
    assert callers["key2"]["completion_tokens"] > 0 and callers["key2"]["ttft_mean"] > 0
    table = subprocess.run(
        [sys.executable, "-m", "cerulean", "usage", "--home", str(served.home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert table.returncode == 0 and "text-embedding-ada-002" in table.stdout


def test_request_lines_are_json_with_the_fields_and_no_secret(served: Server) -> None:
    answer = client(served).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("Bye."), max_tokens=2
    )
    request_id = answer.headers["apim-request-id"]
    deadline = time.monotonic() + 10
    while request_id not in served.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    output = served.output()
    logged = [line for line in output.splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in logged]  # every log line is one JSON object
    access = [e for e in entries if e["logger"] == "cerulean.access"]
    (mine,) = [e for e in access if e.get("request_id") == request_id]
    body = answer.parse()
    assert mine["deployment"] == "gpt-4o" and mine["operation"] == "chat_completion"
    assert mine["status"] == 200 and mine["caller"] == "key1"
    assert mine["prompt_tokens"] == body.usage.prompt_tokens
    assert mine["completion_tokens"] == body.usage.completion_tokens
    assert mine["duration_ms"] >= mine["ttft_ms"] > 0
    assert len(mine["trace_id"]) == 32
    assert KEY1 not in output and KEY2 not in output and ADMIN not in output
    assert NONCE not in output


def test_kill_9_mid_load_loses_at_most_the_last_flush(served: Server) -> None:
    """Four clients loop for a few seconds; the server is killed with SIGKILL while they do.
    Every request answered more than one flush interval (1 s) plus the write (under 1 s on a
    loaded machine) before the kill is in the store; nothing is counted twice."""
    time.sleep(1.5)
    base = sum(r.requests for r in rows(served) if r.deployment == "load")
    answered: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(base_url=served.endpoint, headers={"api-key": KEY1}) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        "openai/deployments/load/chat/completions?api-version=2024-10-21",
                        json={"messages": ask("One word."), "max_tokens": 1},
                        timeout=30,
                    )
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        answered.append(time.monotonic())

    workers = [threading.Thread(target=loop) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(4.0)
    killed_at = time.monotonic()
    served.stop(kill=True)
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    stored = sum(r.requests for r in rows(served) if r.deployment == "load") - base
    settled = sum(1 for t in answered if t < killed_at - 2.0)  # one interval + the write
    assert len(answered) >= 8, "the load did not run"
    numbers = f"answered {len(answered)}, settled {settled}, stored {stored}"
    assert settled <= stored <= len(answered) + len(workers), numbers
    assert len(answered) - stored <= len([t for t in answered if t >= killed_at - 2.0])
