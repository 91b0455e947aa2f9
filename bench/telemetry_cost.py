"""The CPU that telemetry and usage accounting add per request, measured in-process.

The serving bench (``bench/telemetry_overhead.py``) gives the end-to-end ratio, but on a shared
machine its noise can exceed the effect. This measures the cost itself: the in-process app with
the fake engine (no model: what is left is the HTTP layer and the middleware) answers the same
streamed chat requests with both off and with both on (OTLP/HTTP to a local receiver, usage
flushed to SQLite every second), in alternating blocks, and reports the process CPU time
(``time.process_time``, every thread: the exporters' and the flush's too) per request.

    PYTHONPATH=src .venv/bin/python bench/telemetry_cost.py [--requests 400] [--block 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from telemetry_overhead import Sink

KEY = "0123456789abcdef0123456789abcdef"
URL = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY = {
    "messages": [{"role": "user", "content": "hello there"}],
    "max_tokens": 16,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def _client(mode: str, home: Path, sink: Sink) -> TestClient:
    fields: dict[str, Any] = {"home": home, "key1": KEY, "log_level": "warning"}
    if mode == "on":
        fields["otel_endpoint"] = sink.endpoint
    else:
        fields["usage_accounting"] = False
    app = create_app(Settings(**fields), {"fake-model": FakeEngine()})
    client = TestClient(app)
    client.headers["api-key"] = KEY
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per mode")
    parser.add_argument("--block", type=int, default=50, help="requests per turn")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("telemetry_cost.results.json")
    )
    args = parser.parse_args()
    sink = Sink()
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        clients = {m: _client(m, Path(tmp) / m, sink) for m in ("off", "on")}
        for client in clients.values():
            client.__enter__()
            for _ in range(20):  # warm up
                client.post(URL, json=BODY)
        try:
            for turn in range(args.requests // args.block):
                for mode in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                    started = time.process_time()
                    for _ in range(args.block):
                        response = clients[mode].post(URL, json=BODY)
                        assert response.status_code == 200, response.text
                    cpu[mode].append((time.process_time() - started) / args.block)
            time.sleep(1.5)  # a flush and a span batch: their CPU is in the blocks' average
        finally:
            for client in clients.values():
                client.__exit__(None, None, None)
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    result = {
        "requests_per_mode": args.requests,
        "block": args.block,
        "cpu_us_per_request": {"off": round(off * 1e6, 1), "on": round(on * 1e6, 1)},
        "added_cpu_us_per_request": round((on - off) * 1e6, 1),
        "per_block_us": {m: [round(v * 1e6, 1) for v in cpu[m]] for m in cpu},
        "otlp_received": sink.counts,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_block_us"}, indent=2))


if __name__ == "__main__":
    main()
