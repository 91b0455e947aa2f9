"""`cerulean models pull` against a loopback HTTP server: resume after a cut, checksum, 404,
disk full (issue 13 item 6)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cerulean.cli import main
from cerulean.cli import pull as pull_module
from cerulean.cli.pull import resolve_url
from cerulean.services import models as catalog

BODY = b"GGUF" + bytes(range(256)) * 4096  # about 1 MB


class Files(BaseHTTPRequestHandler):
    """Serves BODY at /m.gguf with Range support; ``cut`` sends half and drops the connection."""

    cut_next = False
    ranges: list[str | None] = []

    def do_GET(self) -> None:
        if self.path != "/m.gguf":
            self.send_error(404)
            return
        Files.ranges.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        if Files.cut_next:
            Files.cut_next = False
            self.wfile.write(BODY[start : start + len(BODY) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(BODY[start:])

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Files.ranges = []
    Files.cut_next = False
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def accept_gguf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        catalog, "inspect_gguf", lambda _path: catalog.GgufFacts("qwen2", 4096, "{{ x }}")
    )


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_pull_resumes_after_a_cut_and_registers(base_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    digest = hashlib.sha256(BODY).hexdigest()
    Files.cut_next = True
    first = run(home, "models", "pull", f"{base_url}/m.gguf", "--sha256", digest)
    assert first.exit_code == 1 and "broke off after" in first.output and "resumes" in first.output
    partial = home / "models" / "pulled" / "m.gguf.partial"
    assert 0 < partial.stat().st_size < len(BODY)
    second = run(home, "models", "pull", f"{base_url}/m.gguf", "--sha256", digest)
    assert second.exit_code == 0, second.output
    assert "resumed at" in second.output and digest in second.output
    assert Files.ranges[-1] == f"bytes={len(BODY) // 2}-"
    pulled = home / "models" / "pulled" / "m.gguf"
    assert pulled.read_bytes() == BODY and not partial.exists()
    models = {m["name"]: m for m in json.loads(run(home, "models", "list", "--json").output)}
    assert models["m"]["path"] == str(pulled.resolve())
    assert "deployments update gpt-4 --model m" in second.output


def test_a_bad_checksum_deletes_the_file(base_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run(home, "models", "pull", f"{base_url}/m.gguf", "--sha256", "0" * 64)
    assert result.exit_code == 1 and "checksum mismatch" in result.output
    assert not list((home / "models" / "pulled").iterdir())
    assert "m" not in run(home, "models", "list").output.split()


def test_a_404_is_said(base_url: str, tmp_path: Path) -> None:
    result = run(tmp_path / "home", "models", "pull", f"{base_url}/nope.gguf", "--name", "x1")
    assert result.exit_code == 1 and "answered HTTP 404" in result.output


def test_a_full_disk_is_refused_before_writing(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull_module, "_free", lambda _directory: 1000)
    home = tmp_path / "home"
    result = run(home, "models", "pull", f"{base_url}/m.gguf")
    assert result.exit_code == 1 and "not enough disk space" in result.output
    assert not list((home / "models" / "pulled").iterdir())


def test_hf_urls_resolve_to_hugging_face() -> None:
    assert (
        resolve_url("hf://Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf")
        == "https://huggingface.co/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/main/"
        "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    )
    assert resolve_url("hf://org/repo@v2/sub/f.gguf") == (
        "https://huggingface.co/org/repo/resolve/v2/sub/f.gguf"
    )
