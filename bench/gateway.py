"""Cerulean as a gateway: what it costs in front of llama-server, and what routing buys.

Two parts, each in one run on one machine, against real llama-server processes built from the
llama.cpp that the llama-cpp-python sdist vendors (``bench/serving.py`` builds and caches it):

1. **Gateway cost.** Bare ``llama-server`` vs ``cerulean serve --no-embedded`` in front of the
   same ``llama-server`` (same model, threads and slots), streaming clients at 1/8/32 (by
   default): tokens/s ratio, TTFT p50 added, the gateway's CPU seconds per 1,000 requests and
   its peak RSS. The levels alternate bare/gateway so drift hits both alike.
2. **Routing.** Three ``llama-server`` upstreams (``--threads 1`` each) behind one deployment,
   a multi-tenant load: 4 long system prompts x 8 clients. Prefix affinity (the default) vs
   round-robin (``CERULEAN_ROUTE_POLICY=round-robin``), with fresh upstreams for each so
   neither inherits the other's caches: tokens/s, TTFT p50 and p95.

    .venv/bin/python bench/gateway.py                     # both parts (about 15 minutes)
    .venv/bin/python bench/gateway.py --part cost --clients 1,8

Results: ``bench/gateway.results.json``; figures and how to read them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import serving
from serving import RunningServer, ServerSpec

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "gateway.results.json"
KEY = "b" * 32
DEPLOYMENT = "gpt-35-turbo"


def _log(message: str) -> None:
    print(f">> {message}", flush=True)


def llama_server(binary: Path, model: Path, *, threads: int, slots: int, ctx: int) -> ServerSpec:
    port = serving.free_port()
    argv = [
        str(binary), "-m", str(model), "-np", str(slots), "-c", str(ctx * slots),
        "-t", str(threads), "-tb", str(threads), "--port", str(port), "--host", "127.0.0.1",
    ]  # fmt: skip
    return ServerSpec(
        name=f"llama-server-{port}",
        argv=argv,
        env=dict(os.environ),
        port=port,
        health_path="/health",
        chat_path="/v1/chat/completions",
        # What the gateway sends llama-server besides the client's body: Azure's top_p of 1
        # (llama-server's own default is 0.95), so that both sides ask the same of it.
        extra_body={"model": model.stem, "top_p": 1.0},
    )


def cerulean_env(home: Path, policy: str, first_byte_timeout: float = 30.0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env.update({"CERULEAN_HOME": str(home), "CERULEAN_KEY1": KEY, "CERULEAN_ROUTE_POLICY": policy})
    # A loaded upstream queues requests before their first token: the routing load (32 requests
    # on 3 single-thread servers) waits longer than the default 30 s, which is not a failure here.
    env["CERULEAN_UPSTREAM_FIRST_BYTE_TIMEOUT"] = str(first_byte_timeout)
    return env


def gateway(
    home: Path, upstreams: list[ServerSpec], *, policy: str = "affinity", first_byte: float = 30.0
) -> ServerSpec:
    """``cerulean serve --no-embedded`` with ``upstreams`` behind deployment gpt-35-turbo."""
    env = cerulean_env(home, policy, first_byte)

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "cerulean", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"cerulean {' '.join(args)} failed:\n{done.stderr}")

    names = []
    for spec in upstreams:
        name = f"u{spec.port}"
        cli("upstreams", "add", name, "--url", f"{spec.base_url}/v1", "--flavor", "llama-server")
        names.append(name)
    cli("deployments", "create", DEPLOYMENT, "--upstream", ",".join(names), "--capacity", "1000000")
    port = serving.free_port()
    argv = [sys.executable, "-m", "cerulean", "serve", "--no-embedded", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    return ServerSpec(
        name=f"cerulean-{policy}",
        argv=argv,
        env=env,
        port=port,
        health_path="/healthz",
        chat_path=serving.DEPLOYMENT_PATH,
        headers={"api-key": KEY},
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_ticks() -> tuple[int, int]:
    """The machine's (stolen, all) CPU ticks so far (``/proc/stat``): on a VM the hypervisor's
    steal, the share of time the host gave to others, is the noise no order swap removes."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else None


def plans(clients: int, per_client: int, salt: int = 0) -> list[list[Any]]:
    """Each client's requests: the short system prompt and a distinct user message (``salt``:
    the same tasks with other numbers, so that no load meets prompts another one cached)."""
    return [
        [
            [
                {"role": "system", "content": serving.SHORT_SYSTEM},
                {"role": "user", "content": serving.user_message(c * 1000 + r, salt)},
            ]
            for r in range(per_client)
        ]
        for c in range(clients)
    ]


async def measure(
    spec: ServerSpec, load: list[list[Any]], args: argparse.Namespace
) -> dict[str, Any]:
    results, wall = await serving.run_load(spec, load, args.max_tokens, args.timeout)
    return serving.summarize(results, wall)


async def part_cost(
    args: argparse.Namespace, binary: Path, model: Path, logs: Path
) -> dict[str, Any]:
    upstream_spec = llama_server(
        binary, model, threads=args.threads, slots=args.slots, ctx=args.ctx
    )
    await serving.check_idle("the gateway-cost part")
    upstream = RunningServer(upstream_spec, logs)
    await upstream.wait_healthy(120)
    home = Path(tempfile.mkdtemp(prefix="cerulean-gw-cost-")) / "home"
    gw_spec = gateway(home, [upstream_spec], first_byte=args.first_byte_timeout)
    gw = RunningServer(gw_spec, logs)
    try:
        await gw.wait_healthy(120)
        warm = plans(1, 2)
        await measure(upstream_spec, warm, args)
        await measure(gw_spec, warm, args)
        rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in args.clients}
        for round_index in range(args.rounds):
            for clients in args.clients:
                # The order swaps every round, so a drifting machine load hits both alike.
                row = await _pair(args, upstream_spec, gw, clients, gateway_first=round_index % 2)
                rounds[clients].append(row)
                paired = row.get("ttft_added_ms_paired_median")
                _log(
                    f"round {round_index + 1}, {clients} clients: bare {row['bare']['tok_per_s']} "
                    f"tok/s, gateway {row['gateway']['tok_per_s']} tok/s "
                    f"(x{row['tok_per_s_ratio']}), TTFT p50 +{row['ttft_p50_added_ms']} ms"
                    + ("" if paired is None else f" (paired median +{paired} ms)")
                    + f", gateway CPU {row['gateway_cpu_s_per_1000_requests']} s per 1,000 "
                    f"requests, host steal {row.get('bare_host_steal_percent')} % bare / "
                    f"{row.get('gateway_host_steal_percent')} % gateway"
                )
        levels = [_level(clients, rows) for clients, rows in rounds.items()]
    finally:
        gw.stop()
        upstream.stop()
    return {"levels": levels, "gateway_peak_rss_mb": serving._mb(gw.peak_rss_kb)}


async def _pair(
    args: argparse.Namespace,
    upstream_spec: ServerSpec,
    gw: RunningServer,
    clients: int,
    *,
    gateway_first: int,
) -> dict[str, Any]:
    """The same load bare and through the gateway, one after the other."""
    per_client = max(2, args.requests // clients)
    out: dict[str, Any] = {"clients": clients, "requests": clients * per_client}
    if clients == 1:
        return await _alternating(args, upstream_spec, gw, per_client, out)
    for which in ("gateway", "bare") if gateway_first else ("bare", "gateway"):
        # Every load its own prompts: the side that ran second would otherwise find each of
        # its prompts in llama-server's prompt cache (some 70 ms of TTFT on this machine).
        load = plans(clients, per_client, salt=next(_salts))
        ticks = host_ticks()
        if which == "bare":
            out["bare"] = await measure(upstream_spec, load, args)
        else:
            before = cpu_seconds(gw.pid)
            out["gateway"] = await measure(gw.spec, load, args)
            out["gateway_cpu_s"] = cpu_seconds(gw.pid) - before
        out[f"{which}_host_steal_percent"] = steal_percent(ticks, host_ticks())
    return _ratios(out)


async def _alternating(
    args: argparse.Namespace,
    upstream_spec: ServerSpec,
    gw: RunningServer,
    requests: int,
    out: dict[str, Any],
) -> dict[str, Any]:
    """One client, its requests alternating bare and through the gateway: request i of each
    side is the same task with other numbers (the same number of prompt tokens, no prompt the
    other side cached), and which side goes first swaps every pair. The machine's drift hits
    both alike, request by request, and the TTFT the gateway adds is the median of the pairs'
    differences. The gateway's CPU is counted over its own requests only (not its idle health
    checks while the bare ones run); each side's wall time is the sum of its requests'."""
    salts = {"bare": next(_salts), "gateway": next(_salts)}
    results: dict[str, list[serving.RequestResult]] = {"bare": [], "gateway": []}
    specs = {"bare": upstream_spec, "gateway": gw.spec}
    cpu = 0.0
    stolen = {"bare": [0, 0], "gateway": [0, 0]}
    async with (
        serving.new_client(upstream_spec, args.timeout) as bare_client,
        serving.new_client(gw.spec, args.timeout) as gw_client,
    ):
        clients = {"bare": bare_client, "gateway": gw_client}
        for index in range(requests):
            for side in ("gateway", "bare") if index % 2 else ("bare", "gateway"):
                messages = [
                    {"role": "system", "content": serving.SHORT_SYSTEM},
                    {"role": "user", "content": serving.user_message(index, salts[side])},
                ]
                before, ticks = cpu_seconds(gw.pid), host_ticks()
                result = await serving.stream_chat(
                    clients[side], specs[side], messages, args.max_tokens
                )
                if side == "gateway":
                    cpu += cpu_seconds(gw.pid) - before
                after = host_ticks()
                stolen[side][0] += after[0] - ticks[0]
                stolen[side][1] += after[1] - ticks[1]
                results[side].append(result)
    for side, side_results in results.items():
        out[side] = serving.summarize(side_results, sum(r.latency for r in side_results))
    pairs = list(zip(results["bare"], results["gateway"], strict=True))
    added = [g.ttft - b.ttft for b, g in pairs if b.ttft is not None and g.ttft is not None]
    unequal = sum(b.prompt_tokens != g.prompt_tokens for b, g in pairs)
    out["pairs_with_unequal_prompt_tokens"] = unequal
    out["ttft_added_ms_pairs"] = [round(a * 1000, 1) for a in added]
    out["ttft_added_ms_paired_median"] = (
        round(statistics.median(added) * 1000, 1) if added else None
    )
    out["gateway_cpu_s"] = cpu
    for side, (steal, total) in stolen.items():
        out[f"{side}_host_steal_percent"] = steal_percent((0, 0), (steal, total))
    return _ratios(out)


def _ratios(out: dict[str, Any]) -> dict[str, Any]:
    bare, through = out["bare"], out["gateway"]
    out["tok_per_s_ratio"] = serving.ratio(through["tok_per_s"], bare["tok_per_s"])
    out["ttft_p50_added_ms"] = _added_ms(through["ttft_p50_s"], bare["ttft_p50_s"])
    out["gateway_cpu_s_per_1000_requests"] = round(out["gateway_cpu_s"] * 1000 / out["requests"], 2)
    return out


_salts = itertools.count(10_000, 10_000)


def _level(clients: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A level over its rounds: tokens/s of all tokens over all wall time, each side; the
    rounds' own ratios beside it (their spread is the run's noise)."""

    def total(side: str) -> float | None:
        wall = sum(r[side]["wall_s"] for r in rows)
        return round(sum(r[side]["completion_tokens"] for r in rows) / wall, 2) if wall else None

    def median(values: list[float | None]) -> float | None:
        known = sorted(v for v in values if v is not None)
        return statistics.median(known) if known else None

    per_round = [r["tok_per_s_ratio"] for r in rows]
    added = [r["ttft_p50_added_ms"] for r in rows]
    requests = sum(r["requests"] for r in rows)
    return {
        "clients": clients,
        "rounds": len(rows),
        "requests": requests,
        "bare_tok_per_s": total("bare"),
        "gateway_tok_per_s": total("gateway"),
        "tok_per_s_ratio": serving.ratio(total("gateway"), total("bare")),
        "tok_per_s_ratio_per_round": per_round,
        "tok_per_s_ratio_median": median(per_round),
        "ttft_p50_added_ms_per_round": added,
        "ttft_p50_added_ms_median": median(added),
        # One client: the median over every pair of alternating requests (see _alternating).
        "ttft_added_ms_paired_median": median(
            [a for r in rows for a in r.get("ttft_added_ms_pairs", [])]
        ),
        "errors": sum(r["gateway"]["errors"] + r["bare"]["errors"] for r in rows),
        # The hypervisor's steal during each side's loads, per round (noise, not the gateway).
        "host_steal_percent_per_round": [
            [r.get("bare_host_steal_percent"), r.get("gateway_host_steal_percent")] for r in rows
        ],
        "gateway_cpu_s_per_1000_requests": round(
            sum(r["gateway_cpu_s"] for r in rows) * 1000 / requests, 2
        ),
        "rounds_detail": rows,
    }


def _added_ms(through: float | None, bare: float | None) -> float | None:
    if through is None or bare is None:
        return None
    return round((through - bare) * 1000, 1)


async def part_routing(
    args: argparse.Namespace, binary: Path, model: Path, logs: Path
) -> dict[str, Any]:
    counter = serving.TokenCounter(model)
    tenants = [serving.long_system_prompt(counter, args.prefix_tokens)[0] for _ in range(4)]
    load = [
        [serving.chat(tenants[c % 4], c * 1000 + r) for r in range(args.routing_requests)]
        for c in range(8)
    ]
    out: dict[str, Any] = {"prefix_tokens": args.prefix_tokens, "tenants": 4, "clients": 8}
    for policy in ("round-robin", "affinity"):
        await serving.check_idle(f"routing with {policy}")
        specs = [
            llama_server(binary, model, threads=1, slots=4, ctx=args.ctx)
            for _ in range(args.upstreams)
        ]
        upstreams = [RunningServer(spec, logs) for spec in specs]
        gw: RunningServer | None = None
        try:
            for upstream in upstreams:  # `upstreams add` probes them: they must answer first
                await upstream.wait_healthy(120)
            home = Path(tempfile.mkdtemp(prefix=f"cerulean-gw-{policy}-")) / "home"
            gw_spec = gateway(home, specs, policy=policy, first_byte=args.first_byte_timeout)
            gw = RunningServer(gw_spec, logs)
            await gw.wait_healthy(120)
            stats = await measure(gw_spec, load, args)
        finally:
            if gw is not None:
                gw.stop()
            for upstream in upstreams:
                upstream.stop()
        _log(
            f"routing {policy}: {stats['tok_per_s']} tok/s, TTFT p50 {stats['ttft_p50_s']} s, "
            f"p95 {stats['ttft_p95_s']} s, errors {stats['errors']}"
        )
        out[policy] = stats
    rr, aff = out["round-robin"], out["affinity"]
    out["affinity_vs_round_robin"] = {
        "tok_per_s": serving.ratio(aff["tok_per_s"], rr["tok_per_s"]),
        "ttft_p50": serving.ratio(aff["ttft_p50_s"], rr["ttft_p50_s"]),
        "ttft_p95": serving.ratio(aff["ttft_p95_s"], rr["ttft_p95_s"]),
    }
    return out


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("cost", "routing", "both"), default="both")
    parser.add_argument("--clients", type=serving._int_csv, default=(1, 8, 32))
    parser.add_argument("--requests", type=int, default=32, help="per level (at least 2 a client)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="cost part: repeat every level, the order swapping"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--upstreams", type=int, default=3)
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--routing-requests", type=int, default=4, help="per client")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--first-byte-timeout",
        type=float,
        default=300.0,
        help="the gateway's upstream first-byte timeout (seconds; the product's default is 30)",
    )
    parser.add_argument("--llama-server", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


async def main() -> None:
    args = parse()
    cache = serving.DEFAULT_CACHE
    if args.llama_server is not None:
        binary, build = args.llama_server, {"given": str(args.llama_server)}
    else:
        binary, build = serving.build_llama_server(cache)
    model = serving.with_gemma_template(serving.embedded_model_path(), cache.parent / "models")
    logs = Path(tempfile.mkdtemp(prefix="cerulean-gateway-bench-"))
    report: dict[str, Any] = {
        "when": serving._now(),
        "machine": serving.machine_info(),
        "llama_server": build,
        "model": model.name,
        "settings": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(args).items()
            if k not in ("out", "llama_server")
        },  # fmt: skip
    }
    started = time.monotonic()
    if args.part in ("cost", "both"):
        report["cost"] = await part_cost(args, binary, model, logs)
    if args.part in ("routing", "both"):
        report["routing"] = await part_routing(args, binary, model, logs)
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _log(f"wrote {args.out} ({report['seconds']:.0f} s; server logs in {logs})")


if __name__ == "__main__":
    asyncio.run(main())
