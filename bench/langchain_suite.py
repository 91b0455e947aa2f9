"""LangChain's standard chat-model suite against Cerulean, through ``AzureChatOpenAI``.

``langchain-tests`` is the suite LangChain runs against every chat-model integration
(``ChatModelIntegrationTests``: invoke, stream, batch, usage, tool calling, structured output,
JSON mode, agent loops...). This script starts a real ``cerulean serve`` with the embedded model
(or uses ``--endpoint``/``--key``), points the suite's ``AzureChatOpenAI`` at it, runs it in its
own virtual environment (``.venv-peers``, made by ``make peer-langchain``: the suite pins pytest
plugins Cerulean's own tests do not use) and reports the counts and each failure's reason.

    make peer-langchain            # or: .venv/bin/python bench/langchain_suite.py

Results go to ``bench/langchain_suite.results.json``; ``docs/compatibility.md`` lists the
remaining failures and why.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
RESULTS = ROOT / "bench" / "langchain_suite.results.json"

SUITE = """
import os

from langchain_openai import AzureChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests


class TestCeruleanAzureChatOpenAI(ChatModelIntegrationTests):
    @property
    def chat_model_class(self):
        return AzureChatOpenAI

    @property
    def chat_model_params(self):
        return {
            "azure_deployment": os.environ["CERULEAN_SUITE_DEPLOYMENT"],
            "model": os.environ["CERULEAN_SUITE_DEPLOYMENT"],
            "api_version": "2024-10-21",
            "azure_endpoint": os.environ["AZURE_OPENAI_ENDPOINT"],
            "api_key": os.environ["AZURE_OPENAI_API_KEY"],
            "stream_usage": True,
        }

    @property
    def supports_json_mode(self):
        return True
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A real ``cerulean serve`` on a free port; its endpoint and key1 once it is healthy."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    command = [sys.executable, "-m", "cerulean", "serve", "--port", str(port)]
    command += ["--home", str(home), "--log-level", "warning"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{endpoint}healthz", timeout=2).status_code == 200:
                key = json.loads((home / "keys.json").read_text())["key1"]
                return process, endpoint, key
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server did not become healthy:\n{log.read_text()}")


def read_junit(path: Path) -> dict[str, Any]:
    """Counts and, per failed test, the first line of its failure."""
    # pytest wrote this file on this machine a moment ago: trusted input.
    cases = ET.parse(path).getroot().iter("testcase")  # noqa: S314
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    reasons: dict[str, str] = {}
    for case in cases:
        name = case.get("name", "?")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            outcome["failed"].append(name)
            message = (failure.get("message") or failure.text or "").strip()
            reasons[name] = message.splitlines()[0][:300] if message else ""
        elif case.find("skipped") is not None:
            outcome["skipped"].append(name)
            skipped = case.find("skipped")
            reasons[name] = (skipped.get("message") or "")[:200] if skipped is not None else ""
        else:
            outcome["passed"].append(name)
    return {
        "counts": {k: len(v) for k, v in outcome.items()},
        "tests": outcome,
        "reasons": reasons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="an already running Cerulean (default: start one)")
    parser.add_argument("--key", help="its api key (with --endpoint)")
    parser.add_argument("--deployment", default="gpt-35-turbo")
    parser.add_argument("-k", dest="select", help="pytest -k expression (a subset)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: run 'make peer-langchain'")
    with tempfile.TemporaryDirectory(prefix="cerulean-langchain-") as tmp:
        work = Path(tmp)
        process = None
        if args.endpoint:
            endpoint, key = args.endpoint, args.key or ""
        else:
            process, endpoint, key = start_server(work / "home", work / "server.log")
        try:
            suite = work / "test_cerulean_langchain.py"
            suite.write_text(textwrap.dedent(SUITE))
            # As langchain-tests' own configuration: its async tests are plain ``async def``.
            (work / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
            junit = work / "junit.xml"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))},
                "AZURE_OPENAI_ENDPOINT": endpoint,
                "AZURE_OPENAI_API_KEY": key,
                "CERULEAN_SUITE_DEPLOYMENT": args.deployment,
            }
            command = [str(PEERS_PYTHON), "-m", "pytest", str(suite), "-q", "-rfEs"]
            command += ["-p", "no:cacheprovider", f"--junitxml={junit}", "--rootdir", tmp]
            if args.select:
                command += ["-k", args.select]
            started = time.monotonic()
            subprocess.run(command, cwd=tmp, env=env, check=False)
            elapsed = time.monotonic() - started
            result = read_junit(junit)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    result["seconds"] = round(elapsed, 1)
    result["deployment"] = args.deployment
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    counts = result["counts"]
    print(
        f"\nLangChain standard suite: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped in {elapsed:.0f} s ({args.out})"
    )
    for name in result["tests"]["failed"]:
        print(f"  FAILED {name}: {result['reasons'].get(name, '')}")


if __name__ == "__main__":
    main()
