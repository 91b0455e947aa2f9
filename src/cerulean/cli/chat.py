"""``cerulean chat`` and ``cerulean status``: the running server, from a terminal.

Both find the server through the data directory's lock file (``<home>/server.lock`` names its
host and port) and a key the CLI can read (``keys.json``, ``CERULEAN_KEY1``); ``--endpoint`` and
``AZURE_OPENAI_ENDPOINT``/``AZURE_OPENAI_KEY`` point elsewhere. They speak the Azure wire like any
client. urllib, not httpx: Cerulean's runtime dependencies do not include an HTTP client.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from cerulean.cli.control import _console, _emit_json, _settings, _store, home_option, json_option
from cerulean.cli.naming import command_name
from cerulean.cli.serverlock import running_server
from cerulean.services.keys import readable_keys
from cerulean.settings import Settings

__all__ = ["chat", "status"]

API_VERSION = "2024-10-21"
HELP = "Commands: /reset (forget the conversation), /system TEXT (a new system message), /bye."


def _endpoint(settings: Settings, endpoint: str | None) -> tuple[str, dict[str, Any] | None]:
    """The server's base URL and its lock-file record (None when given by --endpoint/env)."""
    given = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
    server = running_server(settings.home) if settings.home.exists() else None
    if endpoint is None and server and server.get("port"):
        host = server.get("host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{server['port']}", server
    if given:
        return given.rstrip("/"), None
    raise click.ClickException(
        f"no server runs on {settings.home}: start one ({command_name()} serve), or pass "
        "--home DIR of a running one, or --endpoint URL"
    )


def _key(settings: Settings) -> str:
    if settings.sqlite_file.exists():
        with _store(settings, read_only=True) as store:
            known = readable_keys(store, settings)
        if known:
            return next(iter(known.values()))
    key = os.environ.get("AZURE_OPENAI_KEY") or os.environ.get("AZURE_OPENAI_API_KEY")
    if key:
        return key
    raise click.ClickException(
        "no key to call the server with: keys.json is off and none is set; export "
        "AZURE_OPENAI_KEY=<key1>"
    )


def _request(url: str, key: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"api-key": key, "content-type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (http(s))
    return urllib.request.urlopen(request, timeout=300)  # noqa: S310


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read()).get("error", {})
        return f"{exc.code} {error.get('code', '')}: {error.get('message', '')}"
    except ValueError:
        return f"HTTP {exc.code}"


def _stream(url: str, key: str, body: dict[str, Any]) -> Iterator[str]:
    """The text deltas of one streamed chat answer."""
    with _request(url, key, {**body, "stream": True}) as answer:
        for raw in answer:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                return
            event = json.loads(payload)
            if "error" in event:
                raise click.ClickException(str(event["error"].get("message")))
            for choice in event.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text


@click.command()
@click.argument("deployment", default="gpt-4o")
@click.option("--system", "system", default=None, help="A system message to start with.")
@click.option("--max-tokens", type=click.INT, default=None, help="Cap on each answer's tokens.")
@click.option("--endpoint", default=None, help="Server URL [default: the one on --home].")
@home_option
def chat(
    deployment: str,
    system: str | None,
    max_tokens: int | None,
    endpoint: str | None,
    home: Path | None,
) -> None:
    """Chat with DEPLOYMENT (default gpt-4o) of the running server; answers stream in.

    Each line you type is a user message; the conversation is kept until /reset. Lines read from
    a pipe work the same (one message a line).
    """
    settings = _settings(home)
    base, _server = _endpoint(settings, endpoint)
    key = _key(settings)
    url = f"{base}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # not on Windows
            import readline  # noqa: F401 (line editing and history for input())
        click.echo(f"Chatting with {deployment} at {base}. {HELP}", err=True)
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            break
        if text == "/reset":
            history.clear()
            click.echo("(conversation reset)", err=True)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            history.clear()
            click.echo(
                f"(system message {'set' if system else 'cleared'}; conversation reset)", err=True
            )
            continue
        if text.startswith("/"):
            click.echo(f"(unknown command) {HELP}", err=True)
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        body: dict[str, Any] = {"messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        answer = ""
        try:
            for piece in _stream(url, key, body):
                answer += piece
                click.echo(piece, nl=False)
                sys.stdout.flush()
        except urllib.error.HTTPError as exc:
            history.pop()
            click.echo(f"(error {_error_message(exc)})", err=True)
            continue
        except urllib.error.URLError as exc:
            raise click.ClickException(f"the server at {base} went away ({exc.reason})") from None
        click.echo()
        history.append({"role": "assistant", "content": answer})


@click.command()
@json_option
@click.option("--endpoint", default=None, help="Server URL [default: the one on --home].")
@home_option
def status(as_json: bool, endpoint: str | None, home: Path | None) -> None:
    """The running server: address, pid, loaded models, slots in use, deployments."""
    settings = _settings(home)
    base, server = _endpoint(settings, endpoint)
    key = _key(settings)
    report: dict[str, Any] = {"endpoint": base + "/", "home": str(settings.home)}
    if server:
        report["pid"] = server.get("pid")
    try:
        with _request(f"{base}/openai/models?api-version={API_VERSION}", key) as answer:
            report["loaded_models"] = [m["id"] for m in json.loads(answer.read())["data"]]
        with _request(f"{base}/metrics", key) as answer:
            report["slots"] = _slots(answer.read().decode())
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"the server answered {_error_message(exc)}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"the server at {base} does not answer ({exc.reason})") from None
    if settings.sqlite_file.exists():
        with _store(settings, read_only=True) as store:
            report["deployments"] = {d.name: d.model for d in store.list_deployments()}
    if as_json:
        _emit_json(report)
        return
    console = _console()
    console.print(
        f"Cerulean at {report['endpoint']} (pid {report.get('pid', '?')}, home {report['home']})"
    )
    for model, (busy, total) in report["slots"].items():
        console.print(f"  {model}: {busy:g} of {total:g} slots busy")
    for name, model in report.get("deployments", {}).items():
        console.print(f"  deployment {name} → {model}")


def _slots(text: str) -> dict[str, tuple[float, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    busy: dict[str, float] = {}
    total: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model and sample.name == "cerulean_engine_slots_busy":
                busy[model] = sample.value
            elif model and sample.name == "cerulean_engine_slots":
                total[model] = sample.value
    return {model: (busy.get(model, 0.0), total[model]) for model in total}
