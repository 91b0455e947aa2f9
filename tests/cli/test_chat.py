"""`cerulean chat`'s conversation: history, /system, /reset (the wire is in tests/e2e)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cerulean.cli import chat as chat_module
from cerulean.cli import main


def test_history_system_and_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[dict[str, str]]] = []

    def fake_stream(url: str, key: str, body: dict[str, Any]) -> Iterator[str]:
        assert key == "k" * 32 and "/deployments/mine/chat/completions" in url
        sent.append([dict(m) for m in body["messages"]])
        yield f"answer {len(sent)}"

    monkeypatch.setattr(chat_module, "_stream", fake_stream)
    monkeypatch.setenv("AZURE_OPENAI_KEY", "k" * 32)
    result = CliRunner().invoke(
        main,
        ["chat", "mine", "--endpoint", "http://127.0.0.1:9", "--home", str(tmp_path / "h")],
        input="/system Be brief.\nfirst\nsecond\n/reset\nthird\n/bye\nnever sent\n",
    )
    assert result.exit_code == 0, result.output
    system = {"role": "system", "content": "Be brief."}
    assert sent == [
        [system, {"role": "user", "content": "first"}],
        [
            system,
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer 1"},
            {"role": "user", "content": "second"},
        ],
        [system, {"role": "user", "content": "third"}],
    ]
    assert "answer 3" in result.stdout
