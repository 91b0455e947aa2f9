"""Two `cerulean serve` processes behind one Redis share a deployment's rate limits (issue 5).

Many parallel requests go to a small deployment on both servers; what the two admit together
never exceeds the deployment's budget, and the refused ones get Azure's 429.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.quota_helpers import drop_keys

pytestmark = pytest.mark.slow

CAPACITY = 3  # 3,000 tokens a minute, 3 requests per 10 s
BODY = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 900, "temperature": 0}


def _create_small(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", "deployments", "create", "small", "--model",
         "gemma-3-270m", "--capacity", str(CAPACITY), "--no-wait", "--home", str(home)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[Server]]:
    prefix = f"cerulean-e2e-{uuid.uuid4().hex[:8]}:"
    env = {"CERULEAN_REDIS_URL": redis_url, "CERULEAN_REDIS_PREFIX": prefix}
    running: list[Server] = []
    try:
        for name in ("a", "b"):
            server = Server(home=tmp_path_factory.mktemp(f"budget-{name}") / "home", env=env)
            running.append(server.start())
            _create_small(server.home)
        yield running
    finally:
        for server in running:
            server.stop()
        drop_keys(redis_url, prefix)


def test_two_servers_never_admit_more_than_one_budget(servers: list[Server]) -> None:
    def post(i: int) -> httpx.Response:
        server = servers[i % 2]
        url = f"{server.endpoint}openai/deployments/small/chat/completions?api-version=2024-10-21"
        return httpx.post(url, json=BODY, headers={"api-key": server.key1}, timeout=120)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(8)))
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) + len(refused) == len(answers), [a.status_code for a in answers]
    # Each request is charged its prompt plus max_tokens (900): at most 3 fit 3,000 tokens, and
    # at most 3 requests fit a 10-second window, across both servers together.
    assert 1 <= len(admitted) <= 3
    charged = sum(
        a.json()["usage"]["prompt_tokens"] + BODY["max_tokens"]  # type: ignore[operator]
        for a in admitted
    )
    assert charged <= CAPACITY * 1000
    assert {a.json()["error"]["code"] for a in refused} == {"429"}
    message = refused[0].json()["error"]["message"]
    assert message.startswith("Requests to the ChatCompletions_Create Operation under Azure")
    assert int(refused[0].headers["retry-after"]) >= 1
    for answer in admitted:
        assert answer.headers["x-ratelimit-limit-tokens"] == str(CAPACITY * 1000)
