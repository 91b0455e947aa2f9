"""A real llama-server (built from the llama.cpp the llama-cpp-python sdist vendors) as an
upstream of flavor ``llama-server``: probed (health, context), chat, streaming and json_schema
through the gateway.

The binary is built once per machine by ``make bench-gateway`` / ``make bench`` (about 8 minutes
on 2 cores) into ``.bench/llama-server``; a copy under ``~/.cache/cerulean/llama-server`` is used
too. Without either the test skips, saying how to build it (CI on a machine that has run the
benchmark runs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cerulean.packaged.gemma import ensure_embedded_model
from tests.e2e.conftest import ROOT, Server, free_port

pytestmark = pytest.mark.slow

CANDIDATES = (
    ROOT / ".bench" / "llama-server" / "build" / "bin" / "llama-server",
    Path("~/.cache/cerulean/llama-server/build/bin/llama-server").expanduser(),
)
KEY = "k" * 32
CHAT = "openai/deployments/local-llama/chat/completions?api-version=2024-10-21"


def _binary() -> Path:
    for path in CANDIDATES:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.skip("no llama-server binary here: run 'make bench-gateway' once to build it")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _binary()
    model = ensure_embedded_model(tmp_path_factory.mktemp("ls-models"), progress=False)
    port = free_port()
    log = tmp_path_factory.mktemp("ls-log") / "llama-server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(binary), "-m", str(model), "-np", "2", "-c", "4096", "-t", "1",
             "--port", str(port), "--host", "127.0.0.1"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError(f"llama-server did not start:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def gateway(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ls-gateway") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env.update({"CERULEAN_HOME": str(home), "CERULEAN_KEY1": KEY})
    added = subprocess.run(
        [sys.executable, "-m", "cerulean", "upstreams", "add", "ls", "--url", llama_server,
         "--flavor", "llama-server"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # The probe read the slot's context from /props (-c 4096 over -np 2 slots).
    assert "context 2048 tokens" in added.stdout, added.stdout
    created = subprocess.run(
        [sys.executable, "-m", "cerulean", "deployments", "create", "local-llama",
         "--upstream", "ls"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    server = Server(home=home, extra_args=["--no-embedded"], env={"CERULEAN_KEY1": KEY}).start()
    yield server
    server.stop()


def test_chat_stream_and_json_schema_through_llama_server(gateway: Server) -> None:
    url = gateway.endpoint + CHAT
    headers = {"api-key": KEY}
    ask = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    answer = httpx.post(url, json=ask, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] > 0
    with httpx.stream("POST", url, json={**ask, "stream": True}, headers=headers, timeout=120) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"] == []
    schema = {
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
        "required": ["greeting"],
        "additionalProperties": False,
    }
    structured = httpx.post(
        url,
        json={
            **ask,
            "max_tokens": 48,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "g", "schema": schema},
            },
        },
        headers=headers,
        timeout=120,
    )
    assert structured.status_code == 200, structured.text
    choice = structured.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        assert set(json.loads(choice["message"]["content"])) == {"greeting"}
