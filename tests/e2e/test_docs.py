"""Every Python and shell snippet of README.md and docs/*.md, run against a real server.

A fenced ``python``, ``sh``, ``bash`` or ``shell`` block runs as written, with the environment the
banner exports (``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_KEY``, ``AZURE_OPENAI_API_KEY``,
``OPENAI_API_VERSION``), ``CERULEAN_HOME`` and ``CERULEAN_ADMIN_TOKEN`` of the test server, and
``cerulean`` on ``PATH``; the docs' ``http://127.0.0.1:8000`` means the test server's address.
An HTML comment right before the fence changes that, and is the only way to:

- ``<!-- docs-test: skip (why) -->``: not run (it needs something absent: a downloaded GGUF,
  other machines, a benchmark's hours, ``make``, or it is a fragment);
- ``<!-- docs-test: openai028 -->``: run with the openai 0.28.1 venv.

A snippet passes when it exits 0 and prints no Azure error body. Docs rot no more (issue 13).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, VENV028_PYTHON, Server

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "docs-test-admin-token-0123456789abcdef"
_FENCE = re.compile(r"^(\s*)```(python|sh|bash|shell)\s*$")
_MARKER = re.compile(r"<!--\s*docs-test:\s*(\w+)(.*?)-->")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    language: str
    code: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path) -> Iterator[Snippet]:
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent, language = fence.groups()
        before = lines[index - 1] if index else ""
        found = _MARKER.search(before)
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent) :])
            index += 1
        index += 1
        yield Snippet(path, start, language, "\n".join(body) + "\n", found and found.group(1))


ALL = [snippet for path in DOCS for snippet in snippets(path)]


def test_the_docs_have_snippets_and_markers_are_known() -> None:
    assert len(ALL) > 20
    assert {s.marker for s in ALL} <= {None, "skip", "openai028"}
    assert sum(s.marker is None for s in ALL) >= 8  # most user-facing snippets do run


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("docs") / "home"
    env = {"CERULEAN_ADMIN_TOKEN": ADMIN_TOKEN, "CERULEAN_TRUST_LOCAL_ISSUER": "true"}
    server = Server(home=home, env=env).start()  # the local issuer: docs/entra-id.md
    yield server
    server.stop()


def environment(server: Server, bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    env = {k: v for k, v in env.items() if not k.startswith("CERULEAN_")}
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "cerulean"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cerulean "$@"\n')
    wrapper.chmod(0o755)
    env.update(
        {
            "AZURE_OPENAI_ENDPOINT": server.endpoint,
            "AZURE_OPENAI_KEY": server.key1,  # re-read: a snippet may regenerate key1
            "AZURE_OPENAI_API_KEY": server.key1,
            "OPENAI_API_VERSION": "2024-10-21",
            "CERULEAN_HOME": str(server.home),
            "CERULEAN_ADMIN_TOKEN": ADMIN_TOKEN,
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


@pytest.mark.parametrize("snippet", ALL, ids=[s.id for s in ALL])
def test_snippet_runs_as_written(snippet: Snippet, docs_server: Server, tmp_path: Path) -> None:
    if snippet.marker == "skip":
        pytest.skip("marked docs-test: skip in the markdown")
    code = snippet.code.replace("http://127.0.0.1:8000", docs_server.endpoint.rstrip("/"))
    env = environment(docs_server, tmp_path / "bin")
    if snippet.language == "python":
        python = str(VENV028_PYTHON) if snippet.marker == "openai028" else sys.executable
        command = [python, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{snippet.id} failed:\n{code}\n{output}"
    assert '"error":' not in done.stdout, f"{snippet.id} printed an error:\n{output}"
