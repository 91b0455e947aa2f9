"""The layers import as the architecture says: the CLI's store commands and the pure-Python
parts of the llama.cpp engine work without the native library (issue 10)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BLOCK_LLAMA = "import sys; sys.modules['llama_cpp'] = None  # any import of it now fails\n"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LLAMA + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_store_commands_run_without_llama_cpp(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_python(
        f"""
        from click.testing import CliRunner
        from cerulean.cli import main
        for args in (["--help"], ["deployments", "create", "mine", "--model", "gemma-3-270m"],
                     ["deployments", "list"], ["models", "list"], ["keys", "list"],
                     ["deployments", "show", "mine"]):
            result = CliRunner().invoke(main, [*args, *([] if args == ["--help"] else
                                                         ["--home", {str(home)!r}])])
            assert result.exit_code == 0, (args, result.output, result.exception)
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "module",
    [
        "cerulean.engines.llamacpp",
        "cerulean.engines.llamacpp.tools",
        "cerulean.engines.llamacpp.prompts",
        "cerulean.engines.llamacpp.grammars",
        "cerulean.engines.llamacpp.stops",
        "cerulean.engines.llamacpp.text",
        "cerulean.engines.llamacpp.prefix",
        "cerulean.app",
        "cerulean.cli.control",
    ],
)
def test_pure_modules_import_without_llama_cpp(module: str, tmp_path: Path) -> None:
    done = run_python(f"import {module}", tmp_path)
    assert done.returncode == 0, done.stderr


def test_the_engine_itself_needs_llama_cpp(tmp_path: Path) -> None:
    """The check above means something: the engine module does import the native library."""
    done = run_python("import cerulean.engines.llamacpp.engine", tmp_path)
    assert done.returncode != 0 and "llama_cpp" in done.stderr
