"""What telemetry and usage accounting cost: the serving bench's load with both on vs both off.

Two Cerulean servers from this checkout run side by side, each with the same GGUF, threads and
slots as bench/serving.py uses:

* ``off``: ``--no-usage-accounting`` and no ``OTEL_*`` variable (telemetry off);
* ``on``: usage accounting (the default) and OpenTelemetry exporting traces and metrics over
  OTLP/HTTP to a local receiver in this process (``OTEL_METRIC_EXPORT_INTERVAL`` 5 s so metrics
  really go out during the run); the receiver counts what it got, to show it was exercised.

They take turns, never loaded at once: for each round and client level, the same requests
(bench/serving.py's concurrency load: a short system prompt, a distinct question, temperature 0,
``--max-tokens``) go to one server and then to the other, the order swapping every time. So a
machine whose load drifts (other processes) hits both modes alike, and the ratio of their
completion tokens/s (all tokens over all wall time, per level) is the overhead.

    flock /tmp/bench.lock .venv/bin/python bench/telemetry_overhead.py --clients 1,8 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
MODES = ("off", "on")


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


def _spec(args: argparse.Namespace, mode: str, sink: Sink, home: Path) -> serving.ServerSpec:
    for name in OTEL_VARS:
        os.environ.pop(name, None)
    if mode == "on":
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "5000"
    home.mkdir(parents=True)
    spec = serving.cerulean_spec(_options(args, mode), home)  # copies os.environ now
    for name in OTEL_VARS:
        os.environ.pop(name, None)
    return dataclasses.replace(spec, name=f"cerulean-{mode}")


async def _paired(args: argparse.Namespace, sink: Sink, tmp: Path) -> dict[str, Any]:
    options = _options(args, "off")
    options.logs.mkdir(parents=True, exist_ok=True)
    specs = {mode: _spec(args, mode, sink, tmp / mode) for mode in MODES}
    servers = {mode: serving.RunningServer(spec, options.logs) for mode, spec in specs.items()}
    turns: list[dict[str, Any]] = []
    try:
        for mode in MODES:
            await servers[mode].wait_healthy(options.health_timeout)
            await serving.warm_up(specs[mode], options)
        for round_index in range(args.rounds):
            for clients in options.clients:
                plans = [
                    [
                        serving.chat(serving.SHORT_SYSTEM, (round_index * 100 + c) * 7 + r)
                        for r in range(options.requests_per_client)
                    ]
                    for c in range(clients)
                ]
                swap = (round_index + options.clients.index(clients)) % 2
                for mode in MODES[::-1] if swap else MODES:
                    results, wall = await serving.run_load(
                        specs[mode], plans, options.max_tokens, options.request_timeout
                    )
                    summary = serving.summarize(results, wall)
                    if summary["errors"]:
                        raise SystemExit(f"{mode}: {summary['errors']} errors: {summary}")
                    turn = {
                        "round": round_index + 1,
                        "clients": clients,
                        "mode": mode,
                        "tokens": summary["completion_tokens"],
                        "wall_s": summary["wall_s"],
                        "tok_per_s": summary["tok_per_s"],
                    }
                    turns.append(turn)
                    serving._log(
                        f"round {round_index + 1}, {clients} clients, {mode}: "
                        f"{summary['tok_per_s']} tok/s"
                    )
    finally:
        for server in servers.values():
            server.stop()
    return {"turns": turns, "commands": {m: " ".join(s.argv) for m, s in specs.items()}}


def _summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for clients in sorted({t["clients"] for t in turns}):
        mine = [t for t in turns if t["clients"] == clients]
        rate = {
            mode: sum(t["tokens"] for t in mine if t["mode"] == mode)
            / sum(t["wall_s"] for t in mine if t["mode"] == mode)
            for mode in MODES
        }
        per_round = []
        for index in sorted({t["round"] for t in mine}):
            pair = {t["mode"]: t["tok_per_s"] for t in mine if t["round"] == index}
            per_round.append(round(pair["on"] / pair["off"], 3))
        out[str(clients)] = {
            "off_tok_per_s": round(rate["off"], 2),
            "on_tok_per_s": round(rate["on"], 2),
            "ratio_on_off": round(rate["on"] / rate["off"], 3),
            "median_round_ratio": round(statistics.median(per_round), 3),
            "per_round_ratio": per_round,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=serving.REPO / "bench" / "telemetry_overhead.results.json"
    )
    args = parser.parse_args()
    sink = Sink()
    busy = asyncio.run(serving.check_idle("the machine"))
    with tempfile.TemporaryDirectory(prefix="cerulean-telemetry-") as tmp:
        run = asyncio.run(_paired(args, sink, Path(tmp)))
    summary = _summary(run["turns"])
    result = {
        "started": serving._now(),
        "machine": serving.machine_info(),
        "cpu_busy_before_pct": busy,
        "settings": vars(args) | {"out": str(args.out)},
        **run,
        "summary": summary,
        "otlp_received": {"posts": sink.counts, "bytes": sink.bytes},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'clients':>8} {'off tok/s':>10} {'on tok/s':>10} {'on/off':>7} {'median':>7}  rounds")
    for clients, row in summary.items():
        print(
            f"{clients:>8} {row['off_tok_per_s']:>10} {row['on_tok_per_s']:>10} "
            f"{row['ratio_on_off']:>7} {row['median_round_ratio']:>7}  {row['per_round_ratio']}"
        )
    print(f"OTLP receiver got: {sink.counts}")


if __name__ == "__main__":
    main()
