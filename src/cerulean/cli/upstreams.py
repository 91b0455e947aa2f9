"""``cerulean upstreams``: the remote inference servers deployments can be served by.

    cerulean upstreams add vllm-a --url http://10.0.0.5:8000/v1 --flavor vllm
    cerulean upstreams add east --url https://east.openai.azure.com/ --flavor azure \\
        --model gpt-4o --api-key-env AZURE_EAST_KEY
    cerulean deployments create gpt-4o --upstream vllm-a,east

Like the other control-plane commands they work on the store of a data directory; a running
server follows within a second (docs/scaling.md).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.table import Table

from cerulean.cli.control import (
    _console,
    _emit_json,
    _refusals,
    _settings,
    _store,
    home_option,
    json_option,
)
from cerulean.cli.naming import command_name
from cerulean.engines.remote.flavors import FLAVORS
from cerulean.services import upstreams as upstream_service
from cerulean.store.base import UpstreamRecord

__all__ = ["upstreams"]


@click.group()
def upstreams() -> None:
    """Remote servers (vLLM, llama-server, SGLang, Ollama, Azure, another Cerulean)."""


@upstreams.command("add")
@click.argument("name")
@click.option(
    "--url",
    required=True,
    help="The API base as OpenAI clients take it (http://host:port/v1); for azure and cerulean "
    "the resource endpoint (https://NAME.openai.azure.com/).",
)
@click.option("--flavor", type=click.Choice(list(FLAVORS)), required=True, help="What it is.")
@click.option(
    "--model",
    default=None,
    help="The model to ask for (azure, cerulean: the deployment there) [default: the one model "
    "the server lists].",
)
@click.option("--api-key-env", default=None, help="Environment variable that holds its key.")
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File that holds its key (read at each request: rotate it in place).",
)
@click.option("--max-concurrency", type=click.INT, default=None, help="Most requests at once.")
@click.option("--weight", type=click.FLOAT, default=1.0, show_default=True, help="Share of keys.")
@click.option("--probe/--no-probe", default=True, show_default=True, help="Check it answers.")
@home_option
@_refusals
def upstreams_add(
    name: str,
    url: str,
    flavor: str,
    model: str | None,
    api_key_env: str | None,
    api_key_file: Path | None,
    max_concurrency: int | None,
    weight: float,
    probe: bool,
    home: Path | None,
) -> None:
    """Register upstream NAME; it is probed first (models, health, context) unless --no-probe.

    The key is never given on the command line nor stored: name the variable or the file that
    holds it, and a running server reads it when it calls the upstream.
    """
    record = UpstreamRecord(
        name=name,
        url=url,
        flavor=flavor,
        model=model,
        api_key_env=api_key_env,
        api_key_file=str(api_key_file.expanduser().resolve()) if api_key_file else None,
        max_concurrency=max_concurrency,
        weight=weight,
        created_at=datetime.now(timezone.utc),
    )
    with _store(_settings(home)) as store:
        saved, found = upstream_service.add_upstream(store, record, check=probe)
    what = f"Registered upstream {saved.name} ({saved.flavor} at {saved.url}"
    what += f", model {saved.model})" if saved.model else ")"
    click.echo(what + (f": {found.detail}." if found else " without probing it."))
    click.echo(
        f"Serve a deployment from it: {command_name()} deployments create NAME --upstream {name}"
    )


@upstreams.command("list")
@json_option
@home_option
def upstreams_list(as_json: bool, home: Path | None) -> None:
    """Show every upstream: URL, flavor, model, weight, concurrency, the last probe."""
    with _store(_settings(home), read_only=True) as store:
        records = store.list_upstreams()
        users = {
            r.name: [d.name for d in store.list_deployments() if r.name in d.upstreams]
            for r in records
        }
        described = [upstream_service.describe(record) for record in records]
    if as_json:
        _emit_json(
            [{**d, "deployments": users[r.name]} for d, r in zip(described, records, strict=True)]
        )
        return
    table = Table("name", "flavor", "url", "model", "weight", "max", "deployments", "probe")
    for record in records:
        probe = json.loads(record.profile) if record.profile else None
        table.add_row(
            record.name,
            record.flavor,
            record.url,
            record.model or "",
            f"{record.weight:g}",
            str(record.max_concurrency or ""),
            ", ".join(users[record.name]),
            "" if probe is None else ("ok" if probe.get("ok") else "failed"),
        )
    _console().print(table)


@upstreams.command("show")
@click.argument("name")
@json_option
@home_option
@_refusals
def upstreams_show(name: str, as_json: bool, home: Path | None) -> None:
    """Show upstream NAME (its credential masked)."""
    with _store(_settings(home), read_only=True) as store:
        described = upstream_service.describe(upstream_service.get_upstream(store, name))
    if as_json:
        _emit_json(described)
        return
    table = Table("field", "value")
    for field, value in described.items():
        shown = (
            json.dumps(value) if isinstance(value, dict) else ("" if value is None else str(value))
        )
        table.add_row(field, shown)
    _console().print(table)


@upstreams.command("probe")
@click.argument("name")
@home_option
@_refusals
def upstreams_probe(name: str, home: Path | None) -> None:
    """Probe upstream NAME now and record what it found (exit status 1 if it failed)."""
    from dataclasses import replace

    with _store(_settings(home)) as store:
        record = upstream_service.get_upstream(store, name)
        found = upstream_service.probe(record)
        store.put_upstream(replace(record, profile=found.as_json()))
    click.echo(f"{name}: {'ok' if found.ok else 'failed'}: {found.detail}.")
    if not found.ok:
        raise SystemExit(1)


@upstreams.command("remove")
@click.argument("name")
@home_option
@_refusals
def upstreams_remove(name: str, home: Path | None) -> None:
    """Remove upstream NAME (refused while a deployment uses it)."""
    with _store(_settings(home)) as store:
        upstream_service.remove_upstream(store, name)
    click.echo(f"Removed upstream {name}.")
