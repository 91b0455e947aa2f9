"""A real `cerulean serve` process on a free port, with the real embedded model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).parent / "programs"
VENV028_PYTHON = ROOT / ".venv-openai028" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process; ``start`` waits until /healthz answers 200."""

    home: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def key1(self) -> str:
        if "CERULEAN_KEY1" in self.env:
            return self.env["CERULEAN_KEY1"]
        return str(json.loads((self.home / "keys.json").read_text())["key1"])

    def start(self, timeout: float = 120) -> Server:
        self.port = free_port()
        self.log = self.home.parent / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
        env.update(self.env)
        command = [sys.executable, "-m", "cerulean", "serve", "--port", str(self.port)]
        command += ["--home", str(self.home), "--log-level", "warning", *self.extra_args]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.endpoint}healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout}s:\n{self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text() if self.log else ""

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(home=tmp_path_factory.mktemp("e2e") / "home").start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def venv028() -> Path:
    if not VENV028_PYTHON.exists():
        pytest.fail(
            f"{VENV028_PYTHON} is missing: run 'make install' (it builds the openai 0.28.1 venv)"
        )
    return VENV028_PYTHON


def run_program(python: Path | str, program: str, server: Server, timeout: float = 120) -> str:
    """Run one of ``programs/`` the way a user would, with the exported environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "OPENAI_"))}
    env.update({"AZURE_OPENAI_ENDPOINT": server.endpoint, "AZURE_OPENAI_KEY": server.key1})
    done = subprocess.run(
        [str(python), str(PROGRAMS / program)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{program} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout
