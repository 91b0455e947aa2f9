"""Serving benchmark: Cerulean against llama-cpp-python's server and llama.cpp's llama-server.

One run starts each server in turn on the same GGUF (default: the embedded Gemma 3 270M), the
same thread count and the same number of slots (4096 tokens of context each), drives it with
streaming chat completions over HTTP, records its peak RSS, and stops it before the next starts.

Scenarios (``--scenarios``):

* ``concurrency``: for each level of ``--clients``, that many concurrent clients each send
  ``--requests-per-client`` requests one after another (a short shared system prompt, a distinct
  user message that invites a long answer, temperature 0, ``--max-tokens``).
* ``long-prefix``: ``--long-prefix-clients`` concurrent clients, one request each, sharing a
  ~1,000-token system prompt that starts with a fresh nonce (no cache from earlier requests helps).
* ``repeat-prefix``: one client sends two requests sharing a fresh ~1,000-token system prompt;
  the second request's TTFT shows whether the server reuses the cached prefix.

Per level it reports aggregate completion tokens/s (all completion tokens over the level's wall
time), TTFT and latency p50/p95, errors and mean completion tokens; then the ratios
cerulean / llama-server and cerulean / llama-cpp-python. Results go to a table on stdout, a JSON
file (``--out``) and a PNG (``--plot``).

``--soak SECONDS`` runs Cerulean alone under 16 looping clients, a quarter of whose requests hang
up mid-stream, samples its RSS, and afterwards checks the engine gauges on ``/metrics`` are idle.

Without ``--llama-server PATH`` the script builds llama-server once (a few minutes on 2 cores)
from the llama.cpp sources vendored in the llama-cpp-python sdist, cached in
``.bench/llama-server/``.

    make bench                                     # the full default run
    make bench BENCH_ARGS='--servers cerulean,llama-server --clients 1,8'
    .venv/bin/python bench/serving.py --clients 1,4 --requests-per-client 1 --max-tokens 16
    .venv/bin/python bench/serving.py --soak 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_CACHE = REPO / ".bench" / "llama-server"
SERVERS = ("cerulean", "llama-cpp-python", "llama-server")
SCENARIOS = ("concurrency", "long-prefix", "repeat-prefix")
BUSY_WARN_PCT = 10.0
DEPLOYMENT_PATH = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
CERULEAN_TEMPLATE = (
    "serve --port {port} --home {home} --n-threads {threads} --parallel {slots} "
    "--n-ctx {ctx} --log-level warning"
)
SHORT_SYSTEM = (
    "You are a helpful assistant that always answers at length. "
    "Give complete, detailed answers and never stop early."
)


NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # The sdist carries no web UI assets; by default CMake would fetch prebuilt ones from a
    # Hugging Face bucket. The server builds and serves the API fine with an empty asset table.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # llama.cpp's Intel AMX kernels crash on Q4_K weights: left out, as the Makefile leaves them
    # out of llama-cpp-python (docs/engine.md, "Intel AMX"), so both run the same kernels.
    *(
        [f"-D{lang}={NO_AMX}" for lang in ("CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS")]
        if platform.machine() in ("x86_64", "AMD64")
        else []
    ),
)

Message = dict[str, str]


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Options:
    servers: tuple[str, ...]
    scenarios: tuple[str, ...]
    model: Path
    model_is_embedded: bool
    threads: int
    slots: int
    ctx: int
    max_tokens: int
    clients: tuple[int, ...]
    requests_per_client: int
    long_prefix_tokens: int
    long_prefix_clients: int
    out: Path
    plot: Path | None
    llama_server: Path | None
    llama_server_cache: Path
    llama_server_args: tuple[str, ...]
    cerulean_args: str | None
    llama_cpp_python_args: tuple[str, ...]
    chat_format: str
    template: str
    health_timeout: float
    request_timeout: float
    logs: Path
    seed: int
    soak: float | None
    soak_clients: int
    soak_disconnect_rate: float
    soak_sample_interval: float
    soak_settle: float
    soak_out: Path


def _csv(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(allowed)}")
    return items


def _int_csv(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark Cerulean against llama-cpp-python's server and llama-server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--servers", type=lambda s: _csv(s, SERVERS), default=",".join(SERVERS), help="run in order"
    )
    add(
        "--scenarios", type=lambda s: _csv(s, SCENARIOS), default=",".join(SCENARIOS), help="to run"
    )
    add("--model", type=Path, default=None, help="GGUF to serve instead of the embedded one")
    add("--threads", type=int, default=2, help="CPU threads for every server")
    add(
        "--slots",
        type=int,
        default=8,
        help="parallel slots (Cerulean --parallel, llama-server -np)",
    )
    add("--ctx", type=int, default=4096, help="context tokens per slot")
    add("--max-tokens", type=int, default=64, help="max_tokens of every request")
    add("--clients", type=_int_csv, default="1,4,8,16", help="concurrency levels")
    add("--requests-per-client", type=int, default=3, help="sequential requests per client")
    add("--long-prefix-tokens", type=int, default=1000, help="shared system prompt size (tokens)")
    add("--long-prefix-clients", type=int, default=8, help="concurrent clients, long-prefix")
    add("--out", type=Path, default=REPO / "bench" / "serving.results.json", help="JSON output")
    add("--plot", type=Path, default=REPO / "bench" / "serving.png", help="PNG output")
    add("--no-plot", action="store_true", help="skip the PNG")
    add(
        "--llama-server",
        type=Path,
        default=None,
        help="llama-server binary to use instead of building one",
    )
    add("--llama-server-cache", type=Path, default=DEFAULT_CACHE, help="build cache directory")
    add("--llama-server-args", default="", help="extra llama-server arguments (shell words)")
    add(
        "--cerulean-args",
        default=None,
        help="replace the arguments after 'python -m cerulean'; placeholders {port} {home} "
        f"{{threads}} {{slots}} {{ctx}} {{model}}; unset: '{CERULEAN_TEMPLATE}', plus "
        "'--model {model}' for a non-embedded model, without --parallel while serve lacks it",
    )
    add("--llama-cpp-python-args", default="", help="extra llama_cpp.server arguments")
    add("--chat-format", default="gemma", help="llama_cpp.server --chat_format ('none' to omit)")
    add(
        "--template",
        choices=("gemma", "none"),
        default="gemma",
        help="serve every server a copy of the GGUF carrying Gemma's chat template (so all three "
        "render the same turns and run to max_tokens alike); 'none' serves the file as it is",
    )
    add("--health-timeout", type=float, default=300.0, help="seconds to wait for a server")
    add("--request-timeout", type=float, default=900.0, help="seconds a request may take")
    add("--logs", type=Path, default=REPO / ".bench" / "logs", help="server log directory")
    add("--seed", type=int, default=1234, help="seed for the soak's random choices")
    add("--soak", type=float, default=None, metavar="SECONDS", help="soak-test Cerulean instead")
    add("--soak-clients", type=int, default=16, help="looping clients in the soak")
    add("--soak-disconnect-rate", type=float, default=0.25, help="share of requests cut short")
    add("--soak-sample-interval", type=float, default=3.0, help="seconds between RSS samples")
    add("--soak-settle", type=float, default=3.0, help="seconds to wait before reading /metrics")
    add("--soak-out", type=Path, default=REPO / "bench" / "soak.results.json", help="soak JSON")
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    args = build_parser().parse_args(argv)
    model = args.model.expanduser().resolve() if args.model else embedded_model_path()
    if not model.is_file():
        raise SystemExit(f"model file {model} does not exist")
    embedded = args.model is None
    if args.template == "gemma":
        model, embedded = with_gemma_template(model, REPO / ".bench" / "models"), False
    return Options(
        servers=args.servers,
        scenarios=args.scenarios,
        model=model,
        model_is_embedded=embedded,
        threads=args.threads,
        slots=args.slots,
        ctx=args.ctx,
        max_tokens=args.max_tokens,
        clients=args.clients,
        requests_per_client=args.requests_per_client,
        long_prefix_tokens=args.long_prefix_tokens,
        long_prefix_clients=args.long_prefix_clients,
        out=args.out,
        plot=None if args.no_plot else args.plot,
        llama_server=args.llama_server,
        llama_server_cache=args.llama_server_cache,
        llama_server_args=tuple(shlex.split(args.llama_server_args)),
        cerulean_args=args.cerulean_args,
        llama_cpp_python_args=tuple(shlex.split(args.llama_cpp_python_args)),
        chat_format=args.chat_format,
        template=args.template,
        health_timeout=args.health_timeout,
        request_timeout=args.request_timeout,
        logs=args.logs,
        seed=args.seed,
        soak=args.soak,
        soak_clients=args.soak_clients,
        soak_disconnect_rate=args.soak_disconnect_rate,
        soak_sample_interval=args.soak_sample_interval,
        soak_settle=args.soak_settle,
        soak_out=args.soak_out,
    )


# Gemma's turn format as a Jinja chat template: the system message opens the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ ns.system if role == 'user' else '' }}"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def with_gemma_template(model: Path, cache: Path) -> Path:
    """A copy of ``model`` (same weights) whose metadata carries :data:`GEMMA_TEMPLATE`.

    The embedded GGUF is a base model without a template: each server would otherwise fall back
    to a different format (Cerulean's transcript ends answers at a blank line, llama-server uses
    ChatML), and answers of different lengths would make tokens/s incomparable.
    """
    target = cache / f"{model.stem}.gemma-template.gguf"
    if target.is_file() and target.stat().st_mtime >= model.stat().st_mtime:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    _log(f"writing {target.name} (the same weights, with Gemma's chat template)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(model),
            str(target),
            "--chat-template",
            GEMMA_TEMPLATE,
            "--force",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def embedded_model_path() -> Path:
    """The embedded GGUF, assembled (once) where a default ``cerulean serve`` keeps it."""
    from cerulean.packaged.gemma import ensure_embedded_model

    return ensure_embedded_model(Path("~/.cerulean/models").expanduser()).resolve()


# --------------------------------------------------------------------------------------------
# Building llama-server from the llama-cpp-python sdist


def _log(message: str) -> None:
    print(f">> {message}", flush=True)


def _sdist_source(cache: Path) -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist, downloaded and unpacked once."""
    source = cache / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    sdists = cache / "sdist"
    archive = sdists / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not archive.is_file():
        _log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist with pip")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
             "-d", str(sdists)],
            check=True,
        )  # fmt: skip
    _log(f"unpacking {archive.name}")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(cache / "src", filter="data")
        else:  # pragma: no cover - Python without PEP 706
            tar.extractall(cache / "src")  # noqa: S202 - a registry sdist pip just fetched
    return source


def _run_logged(command: list[str], log: Path) -> None:
    """Run a build step, appending its output to ``log`` and showing ninja's [n/m] progress."""
    with log.open("a") as sink:
        sink.write(f"$ {shlex.join(command)}\n")
        sink.flush()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            step = re.match(r"^\[(\d+/\d+)\]", line)
            if step:
                print(f"\r>>   compiling [{step.group(1)}]", end="", flush=True)
        if proc.wait() != 0:
            print()
            raise SystemExit(f"build step failed ({proc.returncode}); see {log}")
    print()


def build_llama_server(cache: Path) -> tuple[Path, dict[str, Any]]:
    """llama-server built from the sdist's llama.cpp, compiled once into ``cache``."""
    binary = cache / "build" / "bin" / "llama-server"
    info_path = cache / "build-info.json"
    if binary.is_file() and info_path.is_file():
        return binary, dict(json.loads(info_path.read_text()))
    cache.mkdir(parents=True, exist_ok=True)
    source = _sdist_source(cache)
    log = cache / "build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(source), "-B", str(cache / "build"), *generator, *CMAKE_FLAGS]
    build = [
        "cmake",
        "--build",
        str(cache / "build"),
        "--target",
        "llama-server",
        f"-j{os.cpu_count() or 2}",
    ]
    _log(f"building llama-server from the sdist's llama.cpp (a few minutes on 2 cores; log {log})")
    started = time.monotonic()
    _run_logged(configure, log)
    _run_logged(build, log)
    info = {
        "source": f"llama.cpp vendored in the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist",
        "configure": shlex.join(configure),
        "build": shlex.join(build),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": _now(),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    _log(f"built {binary} in {info['build_seconds']} s")
    return binary, info


def llama_server_binary(options: Options) -> tuple[Path, dict[str, Any]]:
    if options.llama_server is not None:
        path = options.llama_server.expanduser().resolve()
        if not path.is_file():
            raise SystemExit(f"--llama-server {path} does not exist")
        return path, {"source": "given with --llama-server"}
    return build_llama_server(options.llama_server_cache.resolve())


# --------------------------------------------------------------------------------------------
# Servers


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    health_path: str
    chat_path: str
    headers: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout + done.stderr).strip()


def _serve_supports(flag: str) -> bool:
    return flag in _command_output([sys.executable, "-m", "cerulean", "serve", "--help"])


def _seed_home(home: Path, model: Path) -> None:
    """Point a fresh Cerulean home at the already assembled embedded model (no 270 MB copy).

    Cerulean accepts the file when the ``.verified`` sidecar matches its size and mtime, which a
    symlink preserves; otherwise it simply assembles the model again.
    """
    models = home / "models"
    models.mkdir(parents=True)
    (models / model.name).symlink_to(model)
    sidecar = model.with_suffix(model.suffix + ".verified")
    if sidecar.is_file():
        shutil.copy2(sidecar, models / sidecar.name)


def _embedded_format() -> str:
    """The hand-written prompt format Cerulean uses for the embedded base model (best effort)."""
    try:
        from cerulean.engines.llamacpp.prompts import EMBEDDED_FORMAT
    except ImportError:
        return "unknown"
    return str(EMBEDDED_FORMAT)


def cerulean_spec(options: Options, home: Path) -> ServerSpec:
    port, key = free_port(), secrets.token_hex(16)
    template = options.cerulean_args
    notes: list[str] = []
    if template is None:
        template = CERULEAN_TEMPLATE
        if not options.model_is_embedded:
            template += " --model {model}"
        if not _serve_supports("--parallel"):
            template = template.replace(" --parallel {slots}", "")
            notes.append("cerulean serve has no --parallel flag yet: ran with its default slots")
    if options.model_is_embedded:
        _seed_home(home, options.model)
    words = shlex.split(
        template.format(
            port=port,
            home=home,
            threads=options.threads,
            slots=options.slots,
            ctx=options.ctx,
            model=options.model,
        )
    )
    if options.model_is_embedded:
        notes.append(f"prompt format for the base model: {_embedded_format()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env["CERULEAN_KEY1"] = key
    # Chat serving only, like the peers: no embedding model in memory (RSS is compared).
    env["CERULEAN_EMBEDDINGS"] = "false"
    version = _command_output([sys.executable, "-m", "cerulean", "--version"])
    return ServerSpec(
        name="cerulean",
        argv=[sys.executable, "-m", "cerulean", *words],
        env=env,
        port=port,
        health_path="/healthz",
        chat_path=DEPLOYMENT_PATH,
        headers={"api-key": key},
        info={"version": version, "notes": notes, "binary": "this checkout (python -m cerulean)"},
    )


def llama_cpp_python_spec(options: Options) -> ServerSpec:
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(options.model)]
    if options.chat_format != "none":
        argv += ["--chat_format", options.chat_format]
    argv += [
        "--interrupt_requests", "False",
        "--n_threads", str(options.threads),
        "--n_threads_batch", str(options.threads),
        "--n_ctx", str(options.ctx),
        "--port", str(port),
        "--host", "127.0.0.1",
        *options.llama_cpp_python_args,
    ]  # fmt: skip
    notes = ["one model instance: requests are served one at a time (no parallel slots)"]
    if options.chat_format == "gemma":
        notes.append("chat_format gemma drops system messages (llama_chat_format.format_gemma)")
    return ServerSpec(
        name="llama-cpp-python",
        argv=argv,
        env=dict(os.environ),
        port=port,
        health_path="/v1/models",
        chat_path="/v1/chat/completions",
        extra_body={"model": options.model.stem},
        info={
            "version": metadata.version("llama-cpp-python"),
            "binary": f"{sys.executable} -m llama_cpp.server (installed llama-cpp-python)",
            "chat_format": options.chat_format,
            "notes": notes,
        },
    )


def llama_server_spec(options: Options, binary: Path, build: dict[str, Any]) -> ServerSpec:
    port = free_port()
    argv = [
        str(binary),
        "-m", str(options.model),
        "-np", str(options.slots),
        "-c", str(options.ctx * options.slots),
        "-t", str(options.threads),
        "-tb", str(options.threads),
        "--port", str(port),
        "--host", "127.0.0.1",
        *options.llama_server_args,
    ]  # fmt: skip
    return ServerSpec(
        name="llama-server",
        argv=argv,
        env=dict(os.environ),
        port=port,
        health_path="/health",
        chat_path="/v1/chat/completions",
        extra_body={"model": options.model.stem},
        info={
            "version": _command_output([str(binary), "--version"]),
            "binary": str(binary),
            "build": build,
            "notes": [],
        },
    )


def read_status_kb(pid: int, key: str) -> int | None:
    """A ``VmHWM``/``VmRSS`` line of /proc/<pid>/status, in KiB (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class RunningServer:
    """A server process started directly (no shell), so its pid is the server's own."""

    def __init__(self, spec: ServerSpec, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self.log_path = logs / f"{spec.name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started = time.monotonic()
        self.peak_rss_kb: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_healthy(self, timeout: float) -> float:
        """Seconds until the health route answered 200; exits with the log tail on failure."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.spec.base_url, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._fail(f"exited with {self.proc.returncode} before becoming healthy")
                try:
                    response = await client.get(self.spec.health_path, timeout=5)
                    if response.status_code == 200:
                        return time.monotonic() - self.started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        self._fail(f"not healthy after {timeout:.0f} s")
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"{self.spec.name} {why}; last log lines:\n" + "\n".join(tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            # VmHWM can lag VmRSS slightly (per-thread RSS counters are folded in lazily)
            readings = [read_status_kb(self.pid, key) for key in ("VmHWM", "VmRSS")]
            self.peak_rss_kb = max((kb for kb in readings if kb is not None), default=None)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------------------------
# Prompts

_TASKS = (
    "Count from {a} to {b}, separated by commas.",
    "List {n} different fruits, one per line, each with a sentence about its taste.",
    "Write a long story about a {animal} who travels to {place}.",
    "Explain in detail, step by step, how {thing} works.",
    "Write {n} numbered tips for someone moving to {place}.",
    "Describe a day in the life of a {animal}, hour by hour, from dawn to midnight.",
    "Write the alphabet from A to Z, and after each letter a word that starts with it.",
    "Name {n} famous rivers and describe each in two sentences.",
)
_ANIMALS = ("fox", "whale", "robot", "sparrow", "tortoise", "dragon", "cat", "octopus")
_PLACES = ("Paris", "the Moon", "Tokyo", "a desert", "Iceland", "the ocean floor", "Lima")
_THINGS = ("a bicycle", "a refrigerator", "the internet", "a steam engine", "a rainbow", "a clock")


def user_message(index: int, salt: int = 0) -> str:
    """A distinct, deterministic request that invites a long answer; a ``salt`` gives the same
    task behind a reference of its own (a prompt no server has cached, of the same length for
    every salt: the reference is fixed-width and comes first, so two salts share no more of the
    prompt than two tasks do)."""
    template = _TASKS[index % len(_TASKS)]
    if salt:
        template = f"(ref {salt:08d}-{index:06d}) {template}"
    return template.format(
        a=1 + index,
        b=300 + index,
        n=20 + index % 30,
        animal=_ANIMALS[index % len(_ANIMALS)],
        place=_PLACES[index % len(_PLACES)],
        thing=_THINGS[index % len(_THINGS)],
    )


def chat(system: str, index: int) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user_message(index)}]


_DEPARTMENTS = ("finance", "support", "research", "legal", "sales", "operations", "design")
_ACTIONS = (
    "file expense reports within ten business days of purchase",
    "lock their screens whenever they leave their desks",
    "review customer tickets before the end of each shift",
    "keep confidential documents in the approved storage system",
    "complete the annual security training by the end of March",
    "record overtime hours in the time tracking tool every Friday",
    "ask a manager before sharing internal data with partners",
)


class TokenCounter:
    """The model's own tokenizer (vocab only), to size the long system prompt."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=False))


def long_system_prompt(counter: TokenCounter, target: int) -> tuple[str, int]:
    """A numbered list of company policies of about ``target`` tokens, led by a fresh nonce."""
    lines = [
        f"Session {secrets.token_hex(8)}. You are the assistant of Contoso Ltd. "
        "Follow the company policies below when you answer."
    ]
    index = 0
    while True:
        index += 1
        lines.append(
            f"{index}. Policy {index}: employees of the "
            f"{_DEPARTMENTS[index % len(_DEPARTMENTS)]} department must "
            f"{_ACTIONS[(index * 3) % len(_ACTIONS)]}; exceptions need written approval."
        )
        if index % 8 == 0:
            tokens = counter.count("\n".join(lines))
            if tokens >= target:
                return "\n".join(lines), tokens


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class RequestResult:
    ok: bool
    status: int | None
    error: str | None
    ttft: float | None
    latency: float
    completion_tokens: int
    tokens_from: str
    content_chunks: int
    prompt_tokens: int | None
    finish_reason: str | None
    disconnected: bool = False


@dataclass
class StreamState:
    start: float
    ttft: float | None = None
    chunks: int = 0
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None

    def absorb(self, payload: dict[str, Any]) -> None:
        if "error" in payload:
            self.error = str(payload["error"])[:300]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage_tokens = usage.get("completion_tokens")
            self.prompt_tokens = usage.get("prompt_tokens")
        for choice in payload.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.chunks += 1
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.start
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def result(self, status: int, *, disconnected: bool = False) -> RequestResult:
        complete = self.done or self.finish_reason is not None
        error = self.error
        if error is None and not complete and not disconnected:
            error = "stream ended without [DONE] or finish_reason"
        return RequestResult(
            ok=error is None,
            status=status,
            error=error,
            ttft=self.ttft,
            latency=time.perf_counter() - self.start,
            completion_tokens=self.chunks if self.usage_tokens is None else self.usage_tokens,
            tokens_from="chunks" if self.usage_tokens is None else "usage",
            content_chunks=self.chunks,
            prompt_tokens=self.prompt_tokens,
            finish_reason=self.finish_reason,
            disconnected=disconnected,
        )


def failure(status: int | None, error: str, start: float) -> RequestResult:
    return RequestResult(
        ok=False,
        status=status,
        error=error[:300],
        ttft=None,
        latency=time.perf_counter() - start,
        completion_tokens=0,
        tokens_from="none",
        content_chunks=0,
        prompt_tokens=None,
        finish_reason=None,
    )


def request_body(spec: ServerSpec, messages: list[Message], max_tokens: int) -> dict[str, Any]:
    return {
        **spec.extra_body,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": max_tokens,
    }


async def stream_chat(
    client: httpx.AsyncClient,
    spec: ServerSpec,
    messages: list[Message],
    max_tokens: int,
    disconnect_after: int | None = None,
) -> RequestResult:
    """One streamed chat completion; ``disconnect_after`` chunks in, it hangs up."""
    state = StreamState(start=time.perf_counter())
    body = request_body(spec, messages, max_tokens)
    try:
        async with client.stream("POST", spec.chat_path, json=body, headers=spec.headers) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                return failure(resp.status_code, f"HTTP {resp.status_code}: {text}", state.start)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    state.done = True
                    break
                state.absorb(json.loads(data))
                if disconnect_after is not None and state.chunks >= disconnect_after:
                    return state.result(resp.status_code, disconnected=True)
            return state.result(resp.status_code)
    except (httpx.HTTPError, ValueError) as exc:
        return failure(None, f"{type(exc).__name__}: {exc}", state.start)


def new_client(spec: ServerSpec, timeout: float) -> httpx.AsyncClient:
    """One connection per client; no proxies from the environment for a local server."""
    return httpx.AsyncClient(
        base_url=spec.base_url,
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        trust_env=False,
    )


async def run_client(
    spec: ServerSpec, plan: list[list[Message]], max_tokens: int, timeout: float
) -> list[RequestResult]:
    async with new_client(spec, timeout) as client:
        return [await stream_chat(client, spec, messages, max_tokens) for messages in plan]


async def run_load(
    spec: ServerSpec, plans: list[list[list[Message]]], max_tokens: int, timeout: float
) -> tuple[list[RequestResult], float]:
    """Every client's plan concurrently; the results and the wall time of the whole load."""
    started = time.perf_counter()
    per_client = await asyncio.gather(
        *(run_client(spec, plan, max_tokens, timeout) for plan in plans)
    )
    wall = time.perf_counter() - started
    return [result for results in per_client for result in results], wall


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(results: list[RequestResult], wall: float) -> dict[str, Any]:
    good = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in good)
    ttfts = [r.ttft for r in good if r.ttft is not None]
    latencies = [r.latency for r in good]
    errors = Counter(
        str(r.status) if r.status not in (None, 200) else "stream" for r in results if not r.ok
    )
    return {
        "requests": len(results),
        "errors": len(results) - len(good),
        "errors_by_kind": dict(errors),
        "error_samples": sorted({r.error for r in results if r.error})[:3],
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tok_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "mean_completion_tokens": round(tokens / len(good), 1) if good else None,
        "ttft_p50_s": _round(percentile(ttfts, 50)),
        "ttft_p95_s": _round(percentile(ttfts, 95)),
        "latency_p50_s": _round(percentile(latencies, 50)),
        "latency_p95_s": _round(percentile(latencies, 95)),
        "tokens_from": sorted({r.tokens_from for r in good}),
        "prompt_tokens": sorted({r.prompt_tokens for r in good if r.prompt_tokens is not None}),
        "finish_reasons": dict(Counter(str(r.finish_reason) for r in good)),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# --------------------------------------------------------------------------------------------
# Scenarios


async def warm_up(spec: ServerSpec, options: Options) -> dict[str, Any]:
    results, wall = await run_load(
        spec, [[chat(SHORT_SYSTEM, 999)]], options.max_tokens, options.request_timeout
    )
    return summarize(results, wall)


async def concurrency_scenario(spec: ServerSpec, options: Options) -> list[dict[str, Any]]:
    levels = []
    for clients in options.clients:
        plans = [
            [
                chat(SHORT_SYSTEM, (c * options.requests_per_client + r) * 7 + clients)
                for r in range(options.requests_per_client)
            ]
            for c in range(clients)
        ]
        results, wall = await run_load(spec, plans, options.max_tokens, options.request_timeout)
        levels.append({"clients": clients, **summarize(results, wall)})
        _log(f"{spec.name}: {clients} clients -> {_brief(levels[-1])}")
    return levels


async def prompt_token_probe(spec: ServerSpec, system: str) -> int | None:
    """The prompt_tokens a non-streamed request with ``system`` reports (what the server sees)."""
    body = {**spec.extra_body, "messages": chat(system, 0), "max_tokens": 1, "temperature": 0}
    async with new_client(spec, 300) as client:
        try:
            response = await client.post(spec.chat_path, json=body, headers=spec.headers)
            usage = response.json().get("usage") or {}
        except (httpx.HTTPError, ValueError):
            return None
    value = usage.get("prompt_tokens")
    return int(value) if isinstance(value, int) else None


async def long_prefix_scenario(
    spec: ServerSpec, options: Options, counter: TokenCounter
) -> dict[str, Any]:
    probe_system, _ = long_system_prompt(counter, options.long_prefix_tokens)
    probe_tokens = await prompt_token_probe(spec, probe_system)
    system, tokens = long_system_prompt(counter, options.long_prefix_tokens)
    plans = [[chat(system, 100 + c)] for c in range(options.long_prefix_clients)]
    results, wall = await run_load(spec, plans, options.max_tokens, options.request_timeout)
    summary = {
        "clients": options.long_prefix_clients,
        "system_prompt_tokens": tokens,
        "probe_prompt_tokens": probe_tokens,
        **summarize(results, wall),
    }
    if _dropped(summary):
        summary["note"] = (
            f"the server saw {probe_tokens} prompt tokens for a {tokens}-token system prompt: "
            "it dropped the system message, so this row is not comparable"
        )
        _log(f"{spec.name}: {summary['note']}")
    _log(f"{spec.name}: long prefix -> {_brief(summary)}")
    return summary


async def repeat_prefix_scenario(
    spec: ServerSpec, options: Options, counter: TokenCounter
) -> dict[str, Any]:
    system, tokens = long_system_prompt(counter, options.long_prefix_tokens)
    plan = [chat(system, 200), chat(system, 201)]
    results, wall = await run_load(spec, [plan], options.max_tokens, options.request_timeout)
    first, second = (r.ttft for r in results)
    summary = {
        "system_prompt_tokens": tokens,
        "ttft_first_s": _round(first),
        "ttft_second_s": _round(second),
        "ttft_ratio_second_first": ratio(second, first),
        **summarize(results, wall),
    }
    _log(f"{spec.name}: repeat prefix -> TTFT {first} s then {second} s")
    return summary


def _brief(stats: dict[str, Any]) -> str:
    return (
        f"{stats['tok_per_s']} tok/s, TTFT p50 {stats['ttft_p50_s']} s, "
        f"errors {stats['errors']}, mean tokens {stats['mean_completion_tokens']}"
    )


async def llama_server_props(spec: ServerSpec) -> dict[str, Any]:
    """The chat template llama-server chose and its slot count, from ``GET /props``."""
    async with httpx.AsyncClient(base_url=spec.base_url, trust_env=False) as client:
        try:
            props = (await client.get("/props", timeout=10)).json()
        except (httpx.HTTPError, ValueError):
            return {}
    template = str(props.get("chat_template", ""))
    return {
        "chat_template_head": template[:200],
        "total_slots": props.get("total_slots"),
        "build_info": props.get("build_info"),
    }


async def bench_server(
    spec: ServerSpec, options: Options, counter: TokenCounter | None
) -> dict[str, Any]:
    busy = await check_idle(spec.name)
    _log(f"starting {spec.name}: {shlex.join(spec.argv)}")
    source = spec.info.get("build", {}).get("source")
    _log(f"{spec.name} binary: {spec.info['binary']}" + (f" ({source})" if source else ""))
    server = RunningServer(spec, options.logs)
    record: dict[str, Any] = {
        "command": shlex.join(spec.argv),
        **spec.info,
        "cpu_busy_before_pct": busy,
    }
    try:
        record["startup_s"] = round(await server.wait_healthy(options.health_timeout), 2)
        if spec.name == "llama-server":
            record["props"] = await llama_server_props(spec)
        record["warm_up"] = await warm_up(spec, options)
        if "concurrency" in options.scenarios:
            record["concurrency"] = await concurrency_scenario(spec, options)
        if counter is not None and "long-prefix" in options.scenarios:
            record["long_prefix"] = await long_prefix_scenario(spec, options, counter)
        if counter is not None and "repeat-prefix" in options.scenarios:
            record["repeat_prefix"] = await repeat_prefix_scenario(spec, options, counter)
    finally:
        server.stop()
    record["peak_rss_mb"] = _mb(server.peak_rss_kb)
    record["log"] = str(server.log_path)
    _log(f"stopped {spec.name} (peak RSS {record['peak_rss_mb']} MB)")
    return record


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def make_spec(name: str, options: Options, home: Path) -> ServerSpec:
    if name == "cerulean":
        return cerulean_spec(options, home)
    if name == "llama-cpp-python":
        return llama_cpp_python_spec(options)
    binary, build = llama_server_binary(options)
    return llama_server_spec(options, binary, build)


# --------------------------------------------------------------------------------------------
# Report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    total = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo"))
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_total_mb": round(int(total.group(1)) / 1024) if total else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _cpu_times() -> tuple[int, int] | None:
    """Total and idle (idle + iowait) jiffies from the first line of /proc/stat."""
    fields = _read("/proc/stat").split("\n", 1)[0].split()[1:9]
    if len(fields) < 5:
        return None
    values = [int(value) for value in fields]
    return sum(values), values[3] + values[4]


async def cpu_busy_percent(interval: float = 2.0) -> float | None:
    """How busy the whole machine is over ``interval`` seconds (before a server starts)."""
    before = _cpu_times()
    await asyncio.sleep(interval)
    after = _cpu_times()
    if before is None or after is None or after[0] == before[0]:
        return None
    return round(100 * (1 - (after[1] - before[1]) / (after[0] - before[0])), 1)


async def check_idle(name: str) -> float | None:
    """Warn when something else uses the CPUs: llama.cpp's spinning threads then slow down a lot."""
    busy = await cpu_busy_percent()
    if busy is not None and busy > BUSY_WARN_PCT:
        _log(
            f"WARNING: the CPUs are {busy:.0f}% busy before {name} starts; another process is "
            "running and the numbers will be distorted (llama.cpp threads compete for cores)"
        )
    return busy


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def settings_record(options: Options) -> dict[str, Any]:
    return {
        "model": options.model.name,
        "model_path": str(options.model),
        "chat_template": options.template,
        "model_is_embedded": options.model_is_embedded,
        "threads": options.threads,
        "slots": options.slots,
        "ctx_per_slot": options.ctx,
        "max_tokens": options.max_tokens,
        "clients": list(options.clients),
        "requests_per_client": options.requests_per_client,
        "long_prefix_tokens": options.long_prefix_tokens,
        "long_prefix_clients": options.long_prefix_clients,
        "scenarios": list(options.scenarios),
    }


def ratios(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """cerulean / peer for tok/s and TTFT p50, per level and for the long-prefix scenario."""
    out: dict[str, Any] = {}
    mine = servers.get("cerulean")
    if mine is None:
        return out
    for peer in ("llama-server", "llama-cpp-python"):
        theirs = servers.get(peer)
        if theirs is None:
            continue
        rows = []
        peer_levels = {lvl["clients"]: lvl for lvl in theirs.get("concurrency", [])}
        for level in mine.get("concurrency", []):
            other = peer_levels.get(level["clients"])
            if other is not None:
                rows.append(_ratio_row(f"{level['clients']} clients", level, other))
        if "long_prefix" in mine and "long_prefix" in theirs:
            row = _ratio_row("long prefix", mine["long_prefix"], theirs["long_prefix"])
            if _dropped(mine["long_prefix"]) or _dropped(theirs["long_prefix"]):
                row["note"] = "not comparable: a server dropped the system prompt"
            rows.append(row)
        out[f"cerulean / {peer}"] = rows
    return out


def _ratio_row(label: str, mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    return {
        "load": label,
        "tok_per_s": ratio(mine["tok_per_s"], theirs["tok_per_s"]),
        "ttft_p50": ratio(mine["ttft_p50_s"], theirs["ttft_p50_s"]),
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    table = Table(title=f"Serving benchmark: {report['settings']['model']}")
    for column in ("server", "load", "tok/s", "TTFT p50", "TTFT p95", "lat p50", "lat p95"):
        table.add_column(column, justify="left" if column in ("server", "load") else "right")
    for column in ("errors", "mean tok", "tokens"):
        table.add_column(column, justify="right")
    for name, record in report["servers"].items():
        for label, stats in _report_rows(record):
            table.add_row(name, label, *_cells(stats))
        table.add_section()
    console.print(table)
    for name, record in report["servers"].items():
        repeat = record.get("repeat_prefix")
        if repeat:
            console.print(
                f"{name}: repeat prefix TTFT {repeat['ttft_first_s']} s -> "
                f"{repeat['ttft_second_s']} s (second/first {repeat['ttft_ratio_second_first']})"
            )
        console.print(f"{name}: peak RSS {record.get('peak_rss_mb')} MB; {record['command']}")
    busy = {n: r["cpu_busy_before_pct"] for n, r in report["servers"].items()}
    if any(value is not None and value > BUSY_WARN_PCT for value in busy.values()):
        console.print(f"WARNING: CPUs were busy before the servers started (%): {busy}")
    for title, rows in report["ratios"].items():
        for row in rows:
            console.print(
                f"{title} @ {row['load']}: tok/s x{row['tok_per_s']}, TTFT p50 x{row['ttft_p50']}"
                + (f" ({row['note']})" if "note" in row else "")
            )


def _report_rows(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(f"{lvl['clients']} clients", lvl) for lvl in record.get("concurrency", [])]
    if "long_prefix" in record:
        rows.append((f"long prefix x{record['long_prefix']['clients']}", record["long_prefix"]))
    if "repeat_prefix" in record:
        rows.append(("repeat prefix", record["repeat_prefix"]))
    return rows


def _cells(stats: dict[str, Any]) -> list[str]:
    keys = ("tok_per_s", "ttft_p50_s", "ttft_p95_s", "latency_p50_s", "latency_p95_s")
    cells = [_fmt(stats[key]) for key in keys]
    cells += [str(stats["errors"]), _fmt(stats["mean_completion_tokens"])]
    cells.append(",".join(stats["tokens_from"]) or "-")
    return cells


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


COLORS = {"cerulean": "tab:blue", "llama-cpp-python": "tab:orange", "llama-server": "tab:green"}


def plot_report(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is missing (make bench installs it); no plot")
        return False
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    _plot_levels(axes[0][0], axes[0][1], report["servers"])
    _plot_long_prefix(axes[1][0], axes[1][1], report)
    settings = report["settings"]
    fig.suptitle(
        f"{settings['model']}: {settings['threads']} threads, {settings['slots']} slots, "
        f"max_tokens {settings['max_tokens']} ({report['machine']['cpu_count']} CPUs)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_levels(tok_ax: Any, ttft_ax: Any, servers: dict[str, Any]) -> None:
    levels: set[int] = set()
    for name, record in servers.items():
        rows = record.get("concurrency", [])
        xs = [row["clients"] for row in rows]
        levels.update(xs)
        style = {"marker": "o", "label": name, "color": COLORS.get(name)}
        tok_ax.plot(xs, [row["tok_per_s"] for row in rows], **style)
        ttft_ax.plot(xs, [row["ttft_p50_s"] for row in rows], **style)
    for ax in (tok_ax, ttft_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(levels), [str(level) for level in sorted(levels)])
    _style(tok_ax, "completion tokens/s (aggregate)", "concurrent clients", "tok/s")
    _style(ttft_ax, "TTFT p50", "concurrent clients", "seconds")


def _plot_long_prefix(tok_ax: Any, ttft_ax: Any, report: dict[str, Any]) -> None:
    servers = report["servers"]
    names = [name for name, record in servers.items() if "long_prefix" in record]
    stats = [servers[name]["long_prefix"] for name in names]
    labels = [
        name + ("\n(system prompt dropped)" if _dropped(st) else "")
        for name, st in zip(names, stats, strict=True)
    ]
    colors = [COLORS.get(name, "tab:gray") for name in names]
    for ax, key in ((tok_ax, "tok_per_s"), (ttft_ax, "ttft_p50_s")):
        bars = ax.bar(labels, [s[key] or 0 for s in stats], color=colors)
        ax.bar_label(bars, fmt="%.3g")
    clients = report["settings"]["long_prefix_clients"]
    _style(tok_ax, f"long prefix, {clients} clients: tok/s", "", "tok/s", legend=False)
    _style(ttft_ax, f"long prefix, {clients} clients: TTFT p50", "", "seconds", legend=False)


def _dropped(stats: dict[str, Any]) -> bool:
    """Whether the server's prompt was far shorter than the shared system prompt alone."""
    probe = stats.get("probe_prompt_tokens")
    return probe is not None and probe < stats["system_prompt_tokens"] / 2


def _style(ax: Any, title: str, xlabel: str, ylabel: str, *, legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    _log(f"wrote {path}")


# --------------------------------------------------------------------------------------------
# Soak


@dataclass
class SoakTally:
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    completion_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)

    def add(self, result: RequestResult) -> None:
        if result.disconnected:
            self.outcomes["disconnected (intended)"] += 1
        elif result.ok:
            self.outcomes["ok"] += 1
            self.completion_tokens += result.completion_tokens
            if result.ttft is not None:
                self.ttfts.append(result.ttft)
        elif result.status in (429, 503):
            self.outcomes[f"{result.status} (intended)"] += 1
        else:
            self.outcomes[f"error {result.status or 'stream'}"] += 1
            if len(self.errors) < 5 and result.error:
                self.errors.append(result.error)

    @property
    def unexpected(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind.startswith("error"))


async def soak_client(
    spec: ServerSpec, options: Options, index: int, deadline: float, tally: SoakTally
) -> None:
    rng = random.Random(options.seed + index)
    async with new_client(spec, options.request_timeout) as client:
        n = 0
        while time.monotonic() < deadline:
            cut = rng.randint(2, 6) if rng.random() < options.soak_disconnect_rate else None
            messages = chat(SHORT_SYSTEM, index * 1000 + n)
            tally.add(await stream_chat(client, spec, messages, options.max_tokens, cut))
            n += 1


async def sample_rss(pid: int, interval: float, tally: SoakTally, stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        rss = read_status_kb(pid, "VmRSS")
        if rss is not None:
            tally.rss_samples.append((round(time.monotonic() - started, 1), rss))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: the sum over labels of each sample name."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match and not line.startswith("#"):
            try:
                totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(3))
            except ValueError:
                continue
    return totals


GAUGES = (
    "cerulean_engine_slots_busy",
    "cerulean_engine_requests_waiting",
    "cerulean_engine_kv_cells_used",
)


async def read_gauges(spec: ServerSpec) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=spec.base_url, trust_env=False) as client:
        try:
            response = await client.get("/metrics", headers=spec.headers, timeout=10)
        except httpx.HTTPError as exc:
            return {"status": None, "error": str(exc), **dict.fromkeys(GAUGES, "n/a")}
    if response.status_code != 200:
        return {"status": response.status_code, **dict.fromkeys(GAUGES, "n/a")}
    totals = parse_metrics(response.text)
    engine = {k: v for k, v in totals.items() if k.startswith("cerulean_engine_")}
    return {"status": 200, **{g: totals.get(g, "n/a") for g in GAUGES}, "all": engine}


def rss_summary(tally: SoakTally, warm_up_s: float) -> dict[str, Any]:
    settled = [kb for t, kb in tally.rss_samples if t >= warm_up_s] or [
        kb for _, kb in tally.rss_samples
    ]
    if not settled:
        return {}
    return {
        "after_warm_up_s": warm_up_s,
        "first_mb": _mb(settled[0]),
        "last_mb": _mb(settled[-1]),
        "max_mb": _mb(max(settled)),
        "growth_mb": _mb(settled[-1] - settled[0]),
        "samples_mb": [[t, _mb(kb)] for t, kb in tally.rss_samples],
    }


async def soak(options: Options, home: Path) -> dict[str, Any]:
    assert options.soak is not None
    spec = cerulean_spec(options, home)
    busy = await check_idle(spec.name)
    _log(f"soak: starting cerulean: {shlex.join(spec.argv)}")
    server = RunningServer(spec, options.logs)
    record: dict[str, Any] = {
        "command": shlex.join(spec.argv),
        **spec.info,
        "cpu_busy_before_pct": busy,
    }
    tally = SoakTally()
    try:
        await server.wait_healthy(options.health_timeout)
        record["warm_up"] = await warm_up(spec, options)
        stop = asyncio.Event()
        sampler = asyncio.create_task(
            sample_rss(server.pid, options.soak_sample_interval, tally, stop)
        )
        deadline = time.monotonic() + options.soak
        _log(f"soak: {options.soak_clients} clients for {options.soak:.0f} s")
        started = time.perf_counter()
        await asyncio.gather(
            *(soak_client(spec, options, i, deadline, tally) for i in range(options.soak_clients))
        )
        load_s = time.perf_counter() - started
        stop.set()
        await sampler
        await asyncio.sleep(options.soak_settle)
        record["metrics_after"] = await read_gauges(spec)
        record["after_request"] = await warm_up(spec, options)
    finally:
        server.stop()
    record.update(soak_summary(options, tally, load_s))
    record["peak_rss_mb"] = _mb(server.peak_rss_kb)
    record["log"] = str(server.log_path)
    record["passed"] = soak_passed(record)
    return record


def soak_summary(options: Options, tally: SoakTally, load_s: float) -> dict[str, Any]:
    return {
        "duration_s": options.soak,
        "load_s": round(load_s, 1),
        "clients": options.soak_clients,
        "disconnect_rate": options.soak_disconnect_rate,
        "outcomes": dict(tally.outcomes),
        "unexpected_errors": tally.unexpected,
        "error_samples": tally.errors,
        "completion_tokens": tally.completion_tokens,
        "tok_per_s": round(tally.completion_tokens / load_s, 2) if load_s else None,
        "ttft_p50_s": _round(percentile(tally.ttfts, 50)),
        "ttft_p95_s": _round(percentile(tally.ttfts, 95)),
        "rss": rss_summary(tally, min(20.0, (options.soak or 0) * 0.2)),
    }


def soak_passed(record: dict[str, Any]) -> bool:
    metrics = record["metrics_after"]
    idle = all(
        metrics[g] in ("n/a", 0.0)
        for g in ("cerulean_engine_slots_busy", "cerulean_engine_requests_waiting")
    )
    return idle and record["unexpected_errors"] == 0 and record["after_request"]["errors"] == 0


def print_soak(record: dict[str, Any]) -> None:
    rss = record["rss"]
    print(f"soak outcomes: {record['outcomes']} (unexpected errors {record['unexpected_errors']})")
    for sample in record["error_samples"]:
        print(f"  error: {sample}")
    print(
        f"soak throughput {record['tok_per_s']} tok/s, TTFT p50 {record['ttft_p50_s']} s, "
        f"p95 {record['ttft_p95_s']} s"
    )
    print(
        f"RSS after warm-up: first {rss.get('first_mb')} MB, last {rss.get('last_mb')} MB, "
        f"max {rss.get('max_mb')} MB (growth {rss.get('growth_mb')} MB); "
        f"peak {record['peak_rss_mb']} MB"
    )
    metrics = record["metrics_after"]
    print("metrics after settle: " + ", ".join(f"{g}={metrics[g]}" for g in GAUGES))
    print("SOAK PASSED" if record["passed"] else "SOAK FAILED")


# --------------------------------------------------------------------------------------------
# Main


async def benchmark(options: Options, home: Path) -> dict[str, Any]:
    counter = None
    if {"long-prefix", "repeat-prefix"} & set(options.scenarios):
        counter = TokenCounter(options.model)
    report: dict[str, Any] = {
        "started_at": _now(),
        "machine": machine_info(),
        "settings": settings_record(options),
        "servers": {},
    }
    if "llama-server" in options.servers:
        llama_server_binary(options)  # build first, before any server holds the cores
    for name in options.servers:
        server_home = home / name
        server_home.mkdir()
        report["servers"][name] = await bench_server(
            make_spec(name, options, server_home), options, counter
        )
    report["finished_at"] = _now()
    report["ratios"] = ratios(report["servers"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    with tempfile.TemporaryDirectory(prefix="cerulean-bench-") as tmp:
        if options.soak is not None:
            started = _now()
            record = asyncio.run(soak(options, Path(tmp)))
            payload = {
                "started_at": started,
                "finished_at": _now(),
                "machine": machine_info(),
                "settings": settings_record(options),
                "soak": record,
            }
            write_json(options.soak_out, payload)
            print_soak(record)
            return 0 if record["passed"] else 1
        report = asyncio.run(benchmark(options, Path(tmp)))
    write_json(options.out, report)
    if options.plot is not None and plot_report(report, options.plot):
        _log(f"wrote {options.plot}")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
