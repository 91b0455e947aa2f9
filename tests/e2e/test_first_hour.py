"""Issue 13, through the real CLI and a real server: a re-pointed built-in survives a restart,
no false warning, embedding GGUFs registered as embedding models, today's deployment names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    return subprocess.run(
        [sys.executable, "-m", "cerulean", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def ok(home: Path, *args: str) -> str:
    done = cli(home, *args)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def client(server: Server) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version="2024-10-21"
    )


def test_the_first_hour(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home=home).start()
    try:
        names = {d["name"] for d in json.loads(ok(home, "deployments", "list", "--json"))}
        assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"} <= names  # item 7
        gemma = next((home / "models").glob("gemma*.gguf"))
        minilm = home / "models" / "all-minilm-l6-v2-f32.gguf"
        ok(home, "models", "add", str(gemma), "--name", "my-gemma")
        added = ok(home, "models", "add", str(minilm), "--name", "minilm")
        assert "an embedding model: embeddings only" in added  # item 3: told by the GGUF
        models = {m["name"]: m for m in json.loads(ok(home, "models", "list", "--json"))}
        assert models["minilm"]["capabilities"] == ["embeddings"]
        ok(home, "deployments", "delete", "gpt-4")  # item 1, as the issue did it
        ok(home, "deployments", "create", "gpt-4", "--model", "my-gemma", "--no-wait")
        ok(home, "deployments", "update", "gpt-35-turbo", "--model", "my-gemma", "--no-wait")
        ok(home, "deployments", "create", "emb", "--model", "minilm", "--no-wait")
        ok(home, "deployments", "create", "emb2", "--model", "all-minilm-l6-v2", "--no-wait")

        sdk = client(server)
        for deployment in ("emb", "emb2", "text-embedding-3-small"):
            vectors = sdk.embeddings.create(model=deployment, input=["a cat", "a dog"])
            assert [len(v.embedding) for v in vectors.data] == [384, 384]
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model="emb", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert refused.value.code == "OperationNotSupported"
        answer = sdk.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert answer.choices[0].message is not None
        time.sleep(3)  # a reconcile pass or more
    finally:
        server.stop()

    again = Server(home=home).start()
    try:
        for name in ("gpt-4", "gpt-35-turbo"):
            shown = json.loads(ok(home, "deployments", "show", name, "--json"))
            assert shown["model"] == "my-gemma", name  # not reverted by the restart
        assert json.loads(ok(home, "deployments", "show", "gpt-4o", "--json"))["builtin"]
        vectors = client(again).embeddings.create(model="emb", input="still here")
        assert len(vectors.data[0].embedding) == 384
        check_chat_and_status(home, again)
    finally:
        again.stop()
    assert "not available on this server" not in server.output() + again.output()  # item 2


def check_chat_and_status(home: Path, server: Server) -> None:
    """Item 8: `cerulean chat` streams answers, keeps the conversation, /reset forgets it;
    `cerulean status` names the server, its models, slots and deployments."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERULEAN_", "AZURE_"))}
    script = "/system You answer briefly.\nSay hello.\nAnd again.\n/reset\nOne more.\n/bye\n"
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", "chat", "gpt-4o", "--max-tokens", "8"]
        + ["--home", str(home)],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "(system message set; conversation reset)" in done.stderr
    assert "(conversation reset)" in done.stderr
    answers = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) >= 2  # three questions, answers of up to 8 tokens each
    assert "error" not in done.stderr.lower()
    status = json.loads(ok(home, "status", "--json"))
    assert status["endpoint"] == server.endpoint
    assert status["pid"] == server.process.pid  # type: ignore[union-attr]
    assert {"gemma-3-270m", "all-minilm-l6-v2"} <= set(status["loaded_models"])
    assert status["slots"]["gemma-3-270m"][1] >= 1
    assert status["deployments"]["gpt-4"] == "my-gemma"
