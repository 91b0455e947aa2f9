"""CLI hints name the command the way the user invoked it (issue 13 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerulean.cli import naming


def test_a_venv_path_is_kept_when_cerulean_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / ".venv" / "bin" / "cerulean"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert naming.command_name(".venv/bin/cerulean") == ".venv/bin/cerulean"
    monkeypatch.setattr(naming.sys, "argv", [".venv/bin/cerulean"])
    hint = naming.name_commands("run cerulean deployments list (see ~/.cerulean here)")
    assert hint == "run .venv/bin/cerulean deployments list (see ~/.cerulean here)"


def test_plain_cerulean_when_it_is_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cerulean"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert naming.command_name(str(script)) == "cerulean"
