"""The control-plane commands: ``cerulean models``, ``deployments``, ``keys`` and ``reset``.

They work on the store of a data directory (``--home``), whether or not a server runs on it: a
running server follows the store (docs/deployments.md).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cerulean.cli.naming import command_name, name_commands
from cerulean.errors import ControlError
from cerulean.services import deployments as deployment_service
from cerulean.services.keys import KEY_NAMES, keys_file, mask_key, readable_keys, regenerate_key
from cerulean.services.models import ensure_models, register_model, remove_model
from cerulean.settings import Settings
from cerulean.store.base import DeploymentRecord, Store

__all__ = ["deployments", "keys", "models", "reset"]

F = TypeVar("F", bound=Callable[..., Any])

home_option = click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory, as given to cerulean serve [env: CERULEAN_HOME; default: ~/.cerulean]",
)


def _settings(home: Path | None) -> Settings:
    try:
        overrides: dict[str, Any] = {} if home is None else {"home": home}
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid setting: {problems}") from exc


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts)."
)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _missing_home(settings: Settings) -> click.ClickException:
    """Why a read-only command found nothing, where it looked, and how to point elsewhere."""
    from cerulean.cli.serverlock import running_homes

    lines = [
        f"no Cerulean data directory at {settings.home} (no server has run there, and this "
        "command does not create one).",
        f"Point at the right one with --home DIR or CERULEAN_HOME=DIR (as given to "
        f"{command_name()} serve).",
    ]
    others = [home for home in running_homes() if home != settings.home]
    if others:
        lines.append(
            "A server is running with "
            + ", ".join(f"--home {home}" for home in others)
            + f": {command_name()} {' '.join(_invoked())} --home {others[0]}"
        )
    return click.ClickException("\n".join(lines))


def _invoked() -> list[str]:
    """The subcommand words of this invocation (``deployments list``), without --home."""
    context = click.get_current_context(silent=True)
    words: list[str] = []
    while context is not None and context.parent is not None:
        words.insert(0, context.info_name or "")
        context = context.parent
    return words


@contextmanager
def _store(settings: Settings, *, read_only: bool = False) -> Iterator[Store]:
    """The data directory's store. ``read_only`` commands never create a data directory: a
    missing one ends the command with where it looked (:func:`_missing_home`)."""
    from cerulean.services.models import embedded_model_records
    from cerulean.store.home import open_store

    if read_only and not settings.database_url and not settings.sqlite_file.exists():
        raise _missing_home(settings)
    store = open_store(settings)  # the home 0700, the SQLite file 0600
    try:
        ensure_models(store, embedded_model_records(settings))
        yield store
    finally:
        store.close()


def _refusals(func: F) -> F:
    """A :class:`ControlError` ends the command with its message (exit status 1)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ControlError as exc:
            raise click.ClickException(name_commands(exc.message)) from None

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    return Console(width=160)


# -- models ---------------------------------------------------------------------------------


@click.group()
def models() -> None:
    """The model catalog: embedded models and the GGUF files you register."""


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", required=True, help="Name deployments refer to (--model NAME).")
@home_option
@_refusals
def models_add(path: Path, name: str, home: Path | None) -> None:
    """Register the GGUF file PATH under --name: chat and completions, or embeddings for a
    sentence-embedding model (told by its architecture and pooling).

    The file stays where it is; its kind, context length and chat template are read from its
    metadata. Deploy it with: cerulean deployments create NAME --model MODEL
    """
    with _store(_settings(home)) as store:
        record = register_model(store, path, name)
    if "embeddings" in record.capabilities:
        kind = "an embedding model: embeddings only"
    else:
        template = "its own chat template" if record.chat_template else "no chat template"
        kind = f"chat and completions, {template}"
    click.echo(
        f"Registered {record.name}: {record.path} (context {record.context_length or '?'} "
        f"tokens, {kind}).\nDeploy it: {command_name()} deployments create {record.name} "
        f"--model {record.name}"
    )


@models.command("pull")
@click.argument("url")
@click.option("--name", default=None, help="Catalog name [default: the file's name, lowercased].")
@click.option("--sha256", default=None, help="The file's SHA-256: a mismatch deletes it.")
@home_option
@_refusals
def models_pull(url: str, name: str | None, sha256: str | None, home: Path | None) -> None:
    """Download the GGUF at URL into the data directory and register it (resumable).

    URL is http(s)://… or hf://ORG/REPO/FILE.gguf (Hugging Face; hf://ORG/REPO@REVISION/… for
    another revision). An interrupted pull resumes where it stopped when run again.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from cerulean.cli.pull import PullError, pull, resolve_url, target_name

    settings = _settings(home)
    try:
        resolved = resolve_url(url)
        file_name = target_name(resolved)
    except PullError as exc:
        raise click.ClickException(str(exc)) from None
    name = name or _default_model_name(file_name)
    with _store(settings) as store:
        if store.get_model(name) is not None:
            raise click.ClickException(
                f"a model called '{name}' is already in the catalog; pick another --name"
            )
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *columns) as bar:
        task = bar.add_task(f"pulling {file_name}", total=None)

        def show(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            pulled = pull(
                resolved, settings.home / "models" / "pulled", sha256=sha256, progress=show
            )
        except PullError as exc:
            raise click.ClickException(str(exc)) from None
    resumed = f", resumed at {pulled.resumed_from:,} bytes" if pulled.resumed_from else ""
    click.echo(
        f"Downloaded {pulled.path} ({pulled.size:,} bytes{resumed}; sha256 {pulled.sha256})."
    )
    with _store(settings) as store:
        record = register_model(store, pulled.path, name)
    click.echo(
        f"Registered {record.name}. Serve it: {command_name()} deployments update gpt-4 "
        f"--model {record.name}"
    )


def _default_model_name(file_name: str) -> str:
    stem = file_name[: -len(".gguf")] if file_name.lower().endswith(".gguf") else file_name
    cleaned = re.sub(r"[^A-Za-z0-9._:-]+", "-", stem.lower()).strip("-._:")
    return cleaned[:128] or "pulled-model"


@models.command("list")
@json_option
@home_option
def models_list(as_json: bool, home: Path | None) -> None:
    """Show the catalog: name, capabilities, context, chat template, file."""
    with _store(_settings(home), read_only=True) as store:
        records = store.list_models()
    if as_json:
        _emit_json([_model_json(record) for record in records])
        return
    table = Table("name", "capabilities", "context", "template", "path")
    for record in records:
        table.add_row(
            record.name,
            ", ".join(record.capabilities),
            str(record.context_length or "?"),
            "yes" if record.chat_template else "no",
            record.path or "(embedded)",
        )
    _console().print(table)


def _model_json(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "capabilities": list(record.capabilities),
        "context_length": record.context_length,
        "chat_template": bool(record.chat_template),
        "path": record.path,
        "created_at": record.created_at.isoformat(timespec="seconds"),
    }


@models.command("remove")
@click.argument("name")
@home_option
@_refusals
def models_remove(name: str, home: Path | None) -> None:
    """Take model NAME out of the catalog (refused while a deployment uses it).

    The GGUF file itself is not touched.
    """
    with _store(_settings(home)) as store:
        remove_model(store, name)
    click.echo(f"Removed {name} from the catalog (its file was left in place).")


# -- deployments ----------------------------------------------------------------------------


@click.group()
def deployments() -> None:
    """Deployments: the names clients call, each bound to a model, with a capacity."""


def _limits(capacity: int) -> str:
    return f"{capacity * 1000:,} tokens and {capacity * 6:,} requests per minute"


def _upstream_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


@deployments.command("create")
@click.argument("name")
@click.option(
    "--model",
    "model",
    default=None,
    help="A model of the catalog (models list); with --upstream, the model name it reports.",
)
@click.option(
    "--upstream",
    "upstream",
    default=None,
    help="Serve it by these upstreams instead (A,B: cerulean upstreams list).",
)
@click.option("--version", default=None, help="Model version to report [default: 1].")
@click.option(
    "--capacity",
    type=click.INT,
    default=deployment_service.DEFAULT_CAPACITY,
    show_default=True,
    help="Thousands of tokens per minute (TPM); requests per minute are 6 per 1,000 TPM.",
)
@click.option(
    "--sku",
    default=deployment_service.DEFAULT_SKU,
    show_default=True,
    help=f"Deployment type: {', '.join(deployment_service.SKUS)}.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until a server running on this data directory has loaded the model.",
)
@home_option
@_refusals
def deployments_create(
    name: str,
    model: str | None,
    upstream: str | None,
    version: str | None,
    capacity: int,
    sku: str,
    wait: bool,
    home: Path | None,
) -> None:
    """Create deployment NAME of --model (2-64 letters, digits, '-', '_', '.').

    A server running on the data directory loads the model within seconds (shown here unless
    --no-wait; its log shows it too) and answers requests to NAME from then on.
    """
    settings = _settings(home)
    upstreams = _upstream_names(upstream) or ()
    with _store(settings) as store:
        record = deployment_service.create_deployment(
            store, name, model, version=version, capacity=capacity, sku=sku, upstreams=upstreams
        )
        key = next(iter(readable_keys(store, settings).values()), None)
    served = f"upstreams {', '.join(upstreams)}" if upstreams else "this server"
    click.echo(
        f"Created deployment {record.name}: model {record.model} (version {record.version}) on "
        f"{served}, {record.sku} capacity {record.capacity} ({_limits(record.capacity)})."
    )
    if wait and not upstreams:
        _wait_for_model(settings, record.model, key)


def _wait_for_model(settings: Settings, model: str, key: str | None) -> None:
    """Show a running server loading ``model`` (it lists loaded models on /openai/models)."""
    from cerulean.cli.serverlock import running_server

    server = running_server(settings.home)
    if not server or not server.get("port"):
        click.echo("No server runs on this data directory: the model loads when one does.")
        return
    if key is None:
        click.echo("The server loads the model now (its log shows the progress).")
        return
    host = server.get("host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{server['port']}/openai/models?api-version=2024-10-21"
    deadline = time.monotonic() + _WAIT_S
    with _console().status(f"The server on port {server['port']} is loading {model}…"):
        while time.monotonic() < deadline:
            if model in _loaded_models(url, key):
                click.echo(f"{model} is loaded: the deployment answers now.")
                return
            time.sleep(0.3)
    click.echo(f"{model} is still loading after {_WAIT_S:.0f} s; the server log shows why.")


_WAIT_S = 300.0


def _loaded_models(url: str, key: str) -> set[str]:
    # urllib: the CLI needs one GET, and httpx is not among Cerulean's runtime dependencies.
    request = urllib.request.Request(url, headers={"api-key": key})  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            body = json.loads(answer.read())
    except (OSError, ValueError):
        return set()
    return {str(item.get("id")) for item in body.get("data", [])}


@deployments.command("list")
@json_option
@home_option
def deployments_list(as_json: bool, home: Path | None) -> None:
    """Show every deployment: model, version, SKU, capacity and the limits it gives."""
    with _store(_settings(home), read_only=True) as store:
        records = store.list_deployments()
    if as_json:
        _emit_json([_deployment_json(record) for record in records])
        return
    table = Table("name", "model", "version", "sku", "capacity", "tokens/min", "requests/min")
    for record in records:
        table.add_row(*_row(record))
    _console().print(table)


def _row(record: DeploymentRecord) -> list[str]:
    return [
        record.name,
        record.model,
        record.version,
        record.sku,
        str(record.capacity),
        f"{record.capacity * 1000:,}",
        f"{record.capacity * 6:,}",
    ]


def _deployment_json(record: DeploymentRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "model": record.model,
        "version": record.version,
        "sku": record.sku,
        "capacity": record.capacity,
        "tokens_per_minute": record.capacity * 1000,
        "requests_per_minute": record.capacity * 6,
        "upstreams": list(record.upstreams),
        "builtin": record.builtin,
        "created_at": record.created_at.isoformat(timespec="seconds"),
    }


@deployments.command("show")
@click.argument("name")
@json_option
@home_option
@_refusals
def deployments_show(name: str, as_json: bool, home: Path | None) -> None:
    """Show deployment NAME."""
    with _store(_settings(home), read_only=True) as store:
        record = deployment_service.get_deployment(store, name)
    if as_json:
        _emit_json(_deployment_json(record))
        return
    table = Table("field", "value")
    fields = ("name", "model", "version", "sku", "capacity", "tokens/min", "requests/min")
    for field, value in zip(fields, _row(record), strict=True):
        table.add_row(field, value)
    table.add_row("created", record.created_at.isoformat(timespec="seconds"))
    _console().print(table)


@deployments.command("update")
@click.argument("name")
@click.option("--model", default=None, help="Serve it by this catalog model from now on.")
@click.option("--capacity", type=click.INT, default=None, help="Thousands of tokens per minute.")
@click.option("--upstream", default=None, help="Serve it by these upstreams from now on (A,B).")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="With --model: wait until a server running on this data directory has loaded it.",
)
@home_option
@_refusals
def deployments_update(
    name: str,
    model: str | None,
    capacity: int | None,
    upstream: str | None,
    wait: bool,
    home: Path | None,
) -> None:
    """Re-point deployment NAME at another --model (built-ins too: a restart keeps it), change
    its capacity (its rate limits change at once), or the upstreams that serve it."""
    if capacity is None and upstream is None and model is None:
        raise click.UsageError("give --model M, --capacity K and/or --upstream A,B")
    if model is not None and upstream is not None:
        raise click.UsageError("give --model or --upstream, not both")
    settings = _settings(home)
    with _store(settings) as store:
        upstreams = _upstream_names(upstream)
        if model is not None:
            record = deployment_service.update_model(store, name, model)
            click.echo(f"Deployment {record.name}: model {record.model} from now on.")
        if upstreams is not None:
            record = deployment_service.update_upstreams(store, name, upstreams)
            click.echo(f"Deployment {record.name}: served by {', '.join(upstreams)}.")
        if capacity is not None:
            record = deployment_service.update_capacity(store, name, capacity)
            click.echo(
                f"Deployment {record.name}: capacity {record.capacity} ({_limits(capacity)})."
            )
        key = next(iter(readable_keys(store, settings).values()), None)
    if model is not None and wait:
        _wait_for_model(settings, model, key)


@deployments.command("delete")
@click.argument("name")
@home_option
@_refusals
def deployments_delete(name: str, home: Path | None) -> None:
    """Delete deployment NAME; requests already running on it finish.

    A running server unloads the model when no other deployment uses it.
    """
    with _store(_settings(home)) as store:
        record = deployment_service.delete_deployment(store, name)
    click.echo(f"Deleted deployment {record.name} (model {record.model}).")


# -- keys -----------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """The account keys, key1 and key2 (both valid at once)."""


@keys.command("list")
@click.option("--show", is_flag=True, help="Show the keys in full, as the portal's Show keys.")
@json_option
@home_option
def keys_list(show: bool, as_json: bool, home: Path | None) -> None:
    """Show both keys, masked (first four characters) unless --show."""
    settings = _settings(home)
    with _store(settings, read_only=True) as store:
        known = readable_keys(store, settings)
        stored = store.key_digests()
    shown: dict[str, str | None] = {}
    notes: dict[str, str] = {}
    for name in KEY_NAMES:
        if name in known:
            shown[name] = known[name] if show else mask_key(known[name])
        else:
            shown[name] = None
            notes[name] = (
                "(stored as a hash only: not shown)"
                if name in stored
                else f"(none yet: {command_name()} serve creates it)"
            )
    if as_json:
        _emit_json(shown)
        return
    table = Table("name", "key")
    for name in KEY_NAMES:
        table.add_row(name, shown[name] or notes[name])
    _console().print(table)


@keys.command("regenerate")
@click.argument("name", type=click.Choice(KEY_NAMES, case_sensitive=False))
@home_option
@_refusals
def keys_regenerate(name: str, home: Path | None) -> None:
    """Replace key NAME (key1 or key2) with a new one and print it once.

    The old value stops working at once on a running server; the other key keeps working, so
    switch your clients to it before regenerating this one.
    """
    settings = _settings(home)
    with _store(settings) as store:
        key = regenerate_key(store, settings, name)
    click.echo(key)
    kept = f"kept in {keys_file(settings)}" if settings.write_keys_file else "not stored anywhere"
    click.echo(f"New {name.lower()} above ({kept}); the old one no longer works.", err=True)


# -- reset ----------------------------------------------------------------------------------

_STATE = (
    "cerulean.db",
    "cerulean.db-wal",
    "cerulean.db-shm",
    "keys.json",
    "key.secret",
    "keys.tmp",
    "local-issuer.pem",
    "models",
    "server.lock",
)


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@home_option
def reset(yes: bool, home: Path | None) -> None:
    """Delete the data directory's state: deployments, catalog, keys, usage, assembled model.

    Registered GGUF files stay where they are. Refused while a server runs on this directory.
    """
    from cerulean.cli.serverlock import running_server

    settings = _settings(home)
    server = running_server(settings.home)
    if server is not None:
        raise click.ClickException(
            f"a server is running on {settings.home} (pid {server.get('pid', '?')}, port "
            f"{server.get('port', '?')}); stop it first"
        )
    # key.secret keys the digests of another database (CERULEAN_DATABASE_URL): kept with it.
    kept = {"key.secret"} if settings.database_url else set()
    names = [name for name in _STATE if name not in kept]
    targets = [settings.home / name for name in names if (settings.home / name).exists()]
    if not targets:
        click.echo(f"Nothing to reset in {settings.home}.")
        return
    if not yes:
        click.confirm(
            f"Delete {', '.join(t.name for t in targets)} from {settings.home}? Deployments, "
            "registered models, keys and usage are lost",
            abort=True,
        )
    for target in targets:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    if settings.home.exists() and not any(settings.home.iterdir()):
        settings.home.rmdir()
    click.echo(f"Reset {settings.home}.")
    if settings.database_url:
        click.echo("CERULEAN_DATABASE_URL names another database: it was left as it is.")
