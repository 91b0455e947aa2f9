"""What telemetry and usage accounting cost: the serving bench with both on vs both off.

One invocation runs bench/serving.py's concurrency scenario on Cerulean alone, alternating two
modes round by round (off, on, then on, off, ...) so that drift in the machine's load hits both:

* ``off``: ``--no-usage-accounting`` and no ``OTEL_*`` variable (telemetry off);
* ``on``: usage accounting (the default) and OpenTelemetry exporting traces and metrics over
  OTLP/HTTP to a local receiver in this process (``OTEL_METRIC_EXPORT_INTERVAL`` 5 s so metrics
  really go out during the run); the receiver counts what it got, to show it was exercised.

It reports completion tokens/s per mode and client level (mean over the rounds) and the ratio
on / off, and writes them to ``bench/telemetry_overhead.results.json``.

    flock /tmp/bench.lock .venv/bin/python bench/telemetry_overhead.py --clients 1,8 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving

OTEL_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL")


class Sink:
    """An OTLP/HTTP receiver that answers 200 and counts the bodies per path."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with sink.lock:
                    sink.counts[self.path] = sink.counts.get(self.path, 0) + 1
                    sink.bytes[self.path] = sink.bytes.get(self.path, 0) + len(body)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _options(args: argparse.Namespace, mode: str) -> serving.Options:
    template = serving.CERULEAN_TEMPLATE + " --model {model}"
    if mode == "off":
        template += " --no-usage-accounting"
    argv = [
        "--servers",
        "cerulean",
        "--scenarios",
        "concurrency",
        "--clients",
        args.clients,
        "--requests-per-client",
        str(args.requests_per_client),
        "--max-tokens",
        str(args.max_tokens),
        "--threads",
        str(args.threads),
        "--no-plot",
        "--cerulean-args",
        template,
    ]
    return serving.parse_options(argv)


def _run(args: argparse.Namespace, mode: str, sink: Sink) -> dict[int, float]:
    for name in OTEL_VARS:
        os.environ.pop(name, None)
    if mode == "on":
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "5000"
    with tempfile.TemporaryDirectory(prefix=f"cerulean-telemetry-{mode}-") as tmp:
        report = asyncio.run(serving.benchmark(_options(args, mode), Path(tmp)))
    levels = report["servers"]["cerulean"]["concurrency"]
    for level in levels:
        if level["errors"]:
            raise SystemExit(f"{mode}: {level['errors']} errors at {level['clients']} clients")
    return {level["clients"]: level["tok_per_s"] for level in levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=serving.REPO / "bench" / "telemetry_overhead.results.json"
    )
    args = parser.parse_args()
    sink = Sink()
    runs: dict[str, list[dict[int, float]]] = {"off": [], "on": []}
    for round_index in range(args.rounds):
        order = ("off", "on") if round_index % 2 == 0 else ("on", "off")
        for mode in order:
            serving._log(f"round {round_index + 1}/{args.rounds}: telemetry and usage {mode}")
            runs[mode].append(_run(args, mode, sink))
    levels = sorted(runs["off"][0])
    summary: dict[str, Any] = {}
    for clients in levels:
        off = statistics.mean(run[clients] for run in runs["off"])
        on = statistics.mean(run[clients] for run in runs["on"])
        per_round = [
            round(a[clients] / b[clients], 3) for a, b in zip(runs["on"], runs["off"], strict=True)
        ]
        summary[str(clients)] = {
            "off_tok_per_s": round(off, 2),
            "on_tok_per_s": round(on, 2),
            "ratio_on_off": round(on / off, 3),
            "per_round_ratio": per_round,
        }
    result = {
        "started": serving._now(),
        "machine": serving.machine_info(),
        "settings": vars(args) | {"out": str(args.out)},
        "runs": runs,
        "summary": summary,
        "otlp_received": {"posts": sink.counts, "bytes": sink.bytes},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'clients':>8} {'off tok/s':>10} {'on tok/s':>10} {'on/off':>7}  per round")
    for clients, row in summary.items():
        print(
            f"{clients:>8} {row['off_tok_per_s']:>10} {row['on_tok_per_s']:>10} "
            f"{row['ratio_on_off']:>7}  {row['per_round_ratio']}"
        )
    print(f"OTLP receiver got: {sink.counts}")


if __name__ == "__main__":
    main()
