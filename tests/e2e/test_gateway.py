"""Cerulean as a gateway, all real parts on loopback (docs/scaling.md, "On one machine").

Upstreams: llama-cpp-python's own OpenAI server with the embedded model (flavor ``openai``) and
the session's Cerulean (flavor ``cerulean``, the Azure dialect). Two gateway replicas
(``cerulean serve --no-embedded``) share one PostgreSQL schema and one Redis prefix. The
unchanged quickstarts and LangChain run through them; a deployment created through the CLI
serves on both within 2 s; a key regenerated through one replica's ARM API works on the other;
together they admit one budget; killing an upstream while clients stream leaves answers coming.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cerulean.packaged.gemma import ensure_embedded_model
from tests.e2e.conftest import VENV028_PYTHON, Server, free_port, run_program
from tests.quota_helpers import drop_keys

pytestmark = pytest.mark.slow

ADMIN = "gateway-admin-token-0123456789abcdef"
KEY1 = "g" * 32
CHAT = "openai/deployments/{}/chat/completions?api-version=2024-10-21"
ASK = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0}


class LlamaPy:
    """llama-cpp-python's OpenAI server (``python -m llama_cpp.server``) on a free port."""

    def __init__(self, model: Path, log: Path) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--chat_format", "gemma", "--n_ctx", "2048", "--n_threads", "1",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        self.log = log
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"llama_cpp.server did not start:\n{log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_embedded_model(tmp_path_factory.mktemp("gateway-models"), progress=False)


@pytest.fixture(scope="module")
def llama_py(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaPy]:
    server = LlamaPy(model_file, tmp_path_factory.mktemp("llama-py") / "server.log")
    yield server
    server.kill()


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def shared_env(
    postgres_url: str, redis_url: str, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The environment both gateways and the CLI share: one PostgreSQL schema, one Redis."""
    from sqlalchemy import create_engine, text

    from cerulean.store.sql import normalize_url

    schema = f"cerulean_gw_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(postgres_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    prefix = f"cerulean-gw-{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env.update(
        {
            "CERULEAN_DATABASE_URL": f"{postgres_url}{separator}options=-csearch_path%3D{schema}",
            "CERULEAN_REDIS_URL": redis_url,
            "CERULEAN_REDIS_PREFIX": prefix,
            "CERULEAN_ROUTING_REDIS_PREFIX": prefix + "routing:",
            "CERULEAN_HOME": str(tmp_path_factory.mktemp("gateway-cli") / "home"),
            "CERULEAN_KEY1": KEY1,  # key2 is generated once, in the shared store
            "CERULEAN_KEY_SECRET": "gateway-replicas-share-this-secret-0123456789",
            "CERULEAN_ADMIN_TOKEN": ADMIN,
            "CERULEAN_UPSTREAM_COOLDOWN": "1",
            "CERULEAN_UPSTREAM_FIRST_BYTE_TIMEOUT": "60",
            "TWIN_KEY": server.key1,
        }
    )
    try:
        yield env
    finally:
        drop_keys(redis_url, prefix)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def gateways(
    shared_env: dict[str, str],
    llama_py: LlamaPy,
    server: Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Server]]:
    cli(shared_env, "upstreams", "add", "pyllama", "--url", llama_py.url, "--flavor", "openai")
    cli(
        shared_env, "upstreams", "add", "twin", "--url", server.endpoint, "--flavor", "cerulean",
        "--model", "gpt-35-turbo", "--api-key-env", "TWIN_KEY",
    )  # fmt: skip
    cli(shared_env, "deployments", "create", "gpt-35-turbo", "--upstream", "pyllama,twin")
    cli(shared_env, "deployments", "create", "tools", "--upstream", "twin")
    env = {k: v for k, v in shared_env.items() if k.startswith(("CERULEAN_", "TWIN_"))}
    env.pop("CERULEAN_HOME")
    running: list[Server] = []
    try:
        for name in ("a", "b"):
            home = tmp_path_factory.mktemp(f"gateway-{name}") / "home"
            running.append(Server(home=home, extra_args=["--no-embedded"], env=env).start())
        yield running
    finally:
        for gateway in running:
            gateway.stop()


def post(gateway: Server, deployment: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(
        gateway.endpoint + CHAT.format(deployment),
        json=body,
        headers={"api-key": KEY1},
        timeout=120,
        **kwargs,
    )


def test_probe_and_show_say_what_they_found(
    shared_env: dict[str, str], gateways: list[Server]
) -> None:
    shown = cli(shared_env, "upstreams", "show", "twin").stdout
    assert "env TWIN_KEY" in shown and shared_env["TWIN_KEY"] not in shown  # masked
    listed = cli(shared_env, "upstreams", "list").stdout
    assert "pyllama" in listed and "gpt-35-turbo" in listed
    refused = cli(
        shared_env, "upstreams", "add", "nowhere", "--url", f"http://127.0.0.1:{free_port()}/v1",
        "--flavor", "vllm", check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "cannot reach" in refused.stderr


def test_the_quickstarts_run_through_the_gateway_unchanged(gateways: list[Server]) -> None:
    first, second = gateways  # run_program exports their CERULEAN_KEY1 as AZURE_OPENAI_KEY
    assert run_program(sys.executable, "quickstart_v1.py", first).strip()
    if VENV028_PYTHON.exists():
        assert run_program(VENV028_PYTHON, "quickstart_v028.py", second).strip()


def test_tools_and_structured_output_pass_through_an_azure_dialect_upstream(
    gateways: list[Server],
) -> None:
    from langchain_openai import AzureChatOpenAI
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        celsius: int

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    llm = AzureChatOpenAI(
        azure_endpoint=gateways[0].endpoint,
        api_key=KEY1,  # type: ignore[arg-type]
        api_version="2024-10-21",
        azure_deployment="tools",
        max_retries=0,
        temperature=0,
        max_tokens=60,  # type: ignore[call-arg]
    )
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    report = llm.with_structured_output(Weather, method="json_schema").invoke("Paris, 21 C")
    assert isinstance(report, Weather)


def test_streams_through_the_gateway_keep_azures_shape(gateways: list[Server]) -> None:
    with httpx.stream(
        "POST",
        gateways[1].endpoint + CHAT.format("gpt-35-turbo"),
        json={**ASK, "stream": True},
        headers={"api-key": KEY1},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert first["choices"] == [] and "prompt_filter_results" in first


def test_changes_through_the_cli_and_arm_are_in_force_on_both_within_2_s(
    shared_env: dict[str, str], gateways: list[Server]
) -> None:
    first, second = gateways
    assert post(second, "late", ASK).status_code == 404
    cli(shared_env, "deployments", "create", "late", "--upstream", "twin")
    started = time.monotonic()
    while post(second, "late", ASK).status_code != 200:
        assert time.monotonic() - started < 2.0
        time.sleep(0.1)
    assert post(first, "late", ASK).status_code == 200
    account = (
        "subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/cerulean"
    )
    regenerated = httpx.post(
        f"{first.endpoint}{account}/regenerateKey?api-version=2024-10-01",
        json={"keyName": "Key2"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert regenerated.status_code == 200, regenerated.text
    new_key = regenerated.json()["key2"]
    started = time.monotonic()
    while True:
        answer = httpx.post(
            second.endpoint + CHAT.format("late"),
            json=ASK,
            headers={"api-key": new_key},
            timeout=60,
        )
        if answer.status_code == 200:
            break
        assert time.monotonic() - started < 2.0, answer.text
        time.sleep(0.1)


def test_two_gateways_admit_at_most_one_budget(
    shared_env: dict[str, str], gateways: list[Server]
) -> None:
    cli(shared_env, "deployments", "create", "tiny", "--upstream", "twin", "--capacity", "1")
    time.sleep(1.2)  # both gateways have read it
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: post(gateways[i % 2], "tiny", ASK), range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1, statuses  # capacity 1: one request per 10 s, together
    assert statuses.count(429) == 5


def test_killing_an_upstream_while_clients_stream(
    model_file: Path, shared_env: dict[str, str], gateways: list[Server], tmp_path: Path
) -> None:
    """kill -9 one of two upstreams under 8 streaming clients: the requests that had not
    started on it are served by the other; those it was streaming end with Azure's error
    event; nothing hangs, and the gateway's in-flight counts return to 0."""
    doomed = LlamaPy(model_file, tmp_path / "doomed.log")
    try:
        cli(shared_env, "upstreams", "add", "doomed", "--url", doomed.url, "--flavor", "openai")
        cli(shared_env, "deployments", "create", "pair", "--upstream", "doomed,twin")
        time.sleep(1.2)

        def stream(i: int) -> str:
            question = [{"role": "user", "content": f"Count to ten, attempt {i}."}]
            body = {**ASK, "stream": True, "max_tokens": 24, "messages": question}
            with httpx.stream(
                "POST", gateways[i % 2].endpoint + CHAT.format("pair"), json=body,
                headers={"api-key": KEY1}, timeout=120,
            ) as response:  # fmt: skip
                if response.status_code != 200:
                    return f"status {response.status_code}"
                events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            if events and events[-1] == "[DONE]":
                return "done"
            assert "error" in json.loads(events[-1])
            return "error event"

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(stream, i) for i in range(16)]
            time.sleep(1.5)
            doomed.kill()
            outcomes = [f.result(timeout=180) for f in futures]
    finally:
        doomed.kill()
    assert set(outcomes) <= {"done", "error event"}, outcomes
    assert outcomes.count("done") >= 8, outcomes
    after = [post(gateways[i % 2], "pair", ASK).status_code for i in range(4)]
    assert after == [200] * 4
    for gateway in gateways:
        metrics = httpx.get(gateway.endpoint + "metrics", headers={"api-key": KEY1}).text
        in_flight = [
            line for line in metrics.splitlines() if line.startswith("cerulean_upstream_in_flight{")
        ]
        assert in_flight and all(line.endswith(" 0.0") for line in in_flight), in_flight
