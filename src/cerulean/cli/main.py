"""The ``cerulean`` command line."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from cerulean import __version__
from cerulean.cli.chat import chat, status
from cerulean.cli.control import deployments, keys, models, reset
from cerulean.cli.filters import blocklists, policies
from cerulean.cli.identity import account, roles, tokens
from cerulean.cli.jobs import batches, files
from cerulean.cli.naming import command_name
from cerulean.cli.upstreams import upstreams
from cerulean.cli.usage import usage
from cerulean.services.keys import mask_key
from cerulean.settings import Settings, cli_fields
from cerulean.state import AppState

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any) -> Any:
    text = str(annotation)
    if "Path" in text:
        return click.Path(path_type=Path)
    if "float" in text:
        return click.FLOAT
    if "int" in text:
        return click.INT
    return click.STRING


def settings_options(func: F) -> F:
    """One ``--flag`` per CLI-exposed settings field; unset flags fall back to env and defaults."""
    for name, field in reversed(list(cli_fields().items())):
        env = f"CERULEAN_{name.upper()}"
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env: {env}; default: {field.default}]"
        if field.annotation is bool:
            decl = f"{flag}/--no-{name.replace('_', '-')}"
            func = click.option(decl, name, default=None, help=help_text)(func)
        else:
            func = click.option(
                flag, name, default=None, type=_click_type(field.annotation), help=help_text
            )(func)
    return func


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment, with CLI flags on top; a bad value exits with its reason."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid setting: {problems}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cerulean")
def main() -> None:
    """Cerulean: a self-hosted Azure OpenAI Service answered by real local models."""


@main.command()
@settings_options
def serve(**overrides: Any) -> None:
    """Serve the Azure OpenAI data plane (default: the embedded Gemma 3 270M on 127.0.0.1:8000)."""
    settings = load_settings(overrides)
    configure_logging(settings.log_level, settings.log_format)
    _check_port_free(settings.host, settings.port)
    if not settings.embedded:  # a pure gateway: no local model, no llama.cpp
        _run_server(settings, None, "", None)
        return
    from cerulean.engines.llamacpp.build import build_default_embedder, build_default_engine
    from cerulean.engines.llamacpp.turns import CpuTurns

    turns = CpuTurns()  # this process's llama.cpp models take turns on the CPU
    try:
        engine, version = build_default_engine(settings, turns=turns)
        embedder = build_default_embedder(
            settings, announce=lambda m: click.echo(f">> {m}"), turns=turns
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    _run_server(settings, engine, version, embedder, turns)


def _run_server(
    settings: Settings,
    engine: Any,
    version: str,
    embedder: tuple[Any, str] | None,
    turns: Any = None,
) -> None:
    import uvicorn

    from cerulean.app import create_app
    from cerulean.cli.serverlock import ServerLock
    from cerulean.server import raise_fd_limit, uvicorn_config

    shared = {"turns": turns}

    def catalog_engine(record: Any) -> Any:
        # llama.cpp is imported only when a registered GGUF is loaded (not in a pure gateway).
        from cerulean.engines.llamacpp.build import build_catalog_engine
        from cerulean.engines.llamacpp.turns import CpuTurns

        if shared["turns"] is None:
            shared["turns"] = CpuTurns()
        return build_catalog_engine(settings, record, turns=shared["turns"])

    engines = {} if engine is None else {engine.info.name: engine}
    embedders = {} if embedder is None else {embedder[0].info.name: embedder[0]}
    app = create_app(
        settings,
        engines,
        default_model=None if engine is None else (engine.info.name, version),
        on_ready=lambda state: _print_banner(settings, state),
        engine_factory=catalog_engine,
        embedders=embedders,
        embedding_model=None if embedder is None else (embedder[0].info.name, embedder[1]),
    )
    models = ", ".join([*engines, *embedders]) or "no local model (a gateway)"
    click.echo(f">> loading {models}; the endpoint follows once it answers")
    raise_fd_limit()
    config = uvicorn_config(app, settings)  # header and keep-alive timeouts (docs/operations.md)
    with ServerLock(
        settings.home, host=settings.host, port=settings.port
    ):  # `cerulean reset` refuses meanwhile
        uvicorn.Server(config).run()


for _command in (
    models, deployments, upstreams, keys, roles, tokens, account, usage, reset, chat, status,
    policies, blocklists, files, batches,
):  # fmt: skip
    main.add_command(_command)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, log_format: str = "text") -> None:
    """One format with timestamps for Cerulean's, uvicorn's and the libraries' lines: text, or
    one JSON object a line (:mod:`cerulean.logformat`).

    Alembic's and the GGUF writer's INFO lines are kept for ``--log-level debug``.
    """
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    if log_format == "json":
        from cerulean.logformat import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for chatty in ("alembic", "gguf"):  # a line per migration step, per file written
        logging.getLogger(chatty).setLevel(quiet)


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror}); another server may be running "
                f"there. Stop it, or pick another port: {command_name()} serve --port 8001 "
                "(make run ARGS='--port 8001')"
            ) from exc


def _print_banner(settings: Settings, state: AppState) -> None:
    click.echo("\n".join(banner_lines(settings, state)))
    sys.stdout.flush()


def _served_by(state: AppState, models: dict[str, Any]) -> str:
    names = [d.name for d in state.store.list_deployments() if d.model in models]
    return ", ".join(names) or "no deployment yet"


def banner_lines(settings: Settings, state: AppState) -> list[str]:
    """What ``serve`` prints once ready: the endpoint and key lines to paste into a shell.

    A key pinned by ``CERULEAN_KEY1``/``KEY2`` (from a secret store) is printed masked: the
    user has it already, and the banner lands in service logs. A generated key is printed in
    full, as before (it is also in ``keys.json``, mode 0600).
    """
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    endpoint = f"http://{host}:{settings.port}/"
    models = ", ".join(state.engines)
    lines = ["", f"Cerulean is ready: {models} behind {_served_by(state, state.engines)}."]
    if not state.engines:
        lines = ["", "Cerulean is ready as a gateway: deployments backed by upstreams."]
    if state.embedders:
        embedders = ", ".join(state.embedders)
        lines.append(f"Embeddings: {embedders} behind {_served_by(state, state.embedders)}.")
    lines += [
        "Paste these lines into your shell, then run your Azure OpenAI code unchanged:",
        "",
        f"export AZURE_OPENAI_ENDPOINT={endpoint}",
    ]
    key = state.shown_keys.get("key1")
    pinned = settings.key1.get_secret_value() if settings.key1 is not None else None
    if key is not None and key == pinned:
        lines += [
            "# key1 is CERULEAN_KEY1's value (not printed: you have it):",
            f'export AZURE_OPENAI_KEY="$CERULEAN_KEY1"  # {mask_key(key)}',
            'export AZURE_OPENAI_API_KEY="$CERULEAN_KEY1"',
        ]
    elif key is not None:
        lines += [f"export AZURE_OPENAI_KEY={key}", f"export AZURE_OPENAI_API_KEY={key}"]
    else:
        lines += [
            "# key1 is stored only as a hash and cannot be shown again;",
            "# set CERULEAN_KEY1 to choose it, or delete the data directory for new keys.",
        ]
    # The api-version AzureOpenAI() and LangChain read when the code names none (GA 2024-10-21).
    lines += [f"export OPENAI_API_VERSION={BANNER_API_VERSION}", ""]
    if state.engines:
        lines += [f"Chat with it here: {command_name()} chat gpt-4o", ""]
    if settings.trust_local_issuer:
        lines += [
            "Entra ID: tokens of the local issuer are trusted (docs/entra-id.md):",
            f'  {command_name()} roles assign <oid> "Cognitive Services OpenAI User"',
            f"  {command_name()} tokens issue --principal <oid>",
            "",
        ]
    return lines + studio_lines(endpoint, state)


def studio_lines(endpoint: str, state: AppState) -> list[str]:
    """Where the Studio is, and what signs in: a generated token is printed (like a generated
    key; it is also in ``<home>/studio.token``, mode 0600), the admin token never is."""
    if state.studio is None:
        return []
    secret = state.studio.secret
    lines = [f"Open Cerulean Studio in your browser: {endpoint}studio"]
    if secret.source == "admin-token":
        lines.append("  sign in with the admin token (CERULEAN_ADMIN_TOKEN)")
    else:
        lines.append(f"  sign-in token: {secret.value}  (kept in {secret.path})")
    return [*lines, ""]


BANNER_API_VERSION = "2024-10-21"
