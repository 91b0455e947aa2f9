"""Microsoft's quickstart programs, unchanged, against a real server with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, run_program

pytestmark = pytest.mark.slow


def test_banner_prints_the_export_lines(server: Server) -> None:
    output = server.output()
    assert f"export AZURE_OPENAI_ENDPOINT={server.endpoint}\n" in output
    assert f"export AZURE_OPENAI_KEY={server.key1}\n" in output
    assert server.key1 not in output.replace(f"AZURE_OPENAI_KEY={server.key1}", "").replace(
        f"AZURE_OPENAI_API_KEY={server.key1}", ""
    ), "the key must appear only in the export lines, never in logs"


def test_openai_v1_quickstart(server: Server) -> None:
    import sys

    answer = run_program(sys.executable, "quickstart_v1.py", server)
    assert answer.strip(), "the model's answer is printed"


def test_openai_v028_quickstart(server: Server, venv028: Path) -> None:
    stdout = run_program(venv028, "quickstart_v028.py", server)
    response, end = json.JSONDecoder().raw_decode(stdout)
    assert response["id"].startswith("chatcmpl-")
    assert response["object"] == "chat.completion"
    assert isinstance(response["created"], int)
    assert response["model"] == "gemma-3-270m"
    choice = response["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = response["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 20
    assert stdout[end:].strip() == choice["message"]["content"].strip()


def test_openai_v028_errors_and_stream(server: Server, venv028: Path) -> None:
    seen = json.loads(run_program(venv028, "errors_v028.py", server))
    assert seen["unknown_deployment"] == ["InvalidRequestError", 404, "DeploymentNotFound"]
    assert seen["wrong_key"] == ["AuthenticationError", 401, None]  # 0.28.1 keeps no code here
    assert seen["bad_version"] == ["InvalidRequestError", 404, "404"]
    assert seen["ok"] == "ok"
    assert seen["stream_chunks"] >= 3
