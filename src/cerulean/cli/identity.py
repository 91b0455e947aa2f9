"""Entra ID on the command line: ``cerulean roles``, ``tokens`` and ``account``.

``roles`` assigns Azure's built-in roles to principals (a token's ``oid``); ``tokens issue``
signs a token with the home's local issuer (for a server started with
``--trust-local-issuer``); ``account`` shows and sets the account's ``disableLocalAuth``. All
work on the store of a data directory (``--home``); a running server follows within a second.
"""

from __future__ import annotations

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
from cerulean.services.account import local_auth_disabled, set_local_auth
from cerulean.services.rbac import ROLES, assign_role, remove_role, role_by_id

__all__ = ["account", "roles", "tokens"]

# -- roles ----------------------------------------------------------------------------------


@click.group()
def roles() -> None:
    """Role assignments of Entra ID principals (Azure's built-in roles)."""


@roles.command("assign")
@click.argument("principal_id")
@click.argument("role")
@home_option
@_refusals
def roles_assign(principal_id: str, role: str, home: Path | None) -> None:
    """Give PRINCIPAL_ID (a token's oid) the built-in ROLE (its name or id), e.g.
    "Cognitive Services OpenAI User"."""
    with _store(_settings(home)) as store:
        principal, definition, created = assign_role(store, principal_id, role)
    verb = "now holds" if created else "already held"
    click.echo(f"{principal} {verb} '{definition.name}'.")


@roles.command("remove")
@click.argument("principal_id")
@click.argument("role")
@home_option
@_refusals
def roles_remove(principal_id: str, role: str, home: Path | None) -> None:
    """Take the built-in ROLE away from PRINCIPAL_ID."""
    with _store(_settings(home)) as store:
        principal, definition = remove_role(store, principal_id, role)
    click.echo(f"{principal} no longer holds '{definition.name}'.")


@roles.command("list")
@click.option("--definitions", is_flag=True, help="List the built-in roles instead.")
@json_option
@home_option
def roles_list(definitions: bool, as_json: bool, home: Path | None) -> None:
    """The role assignments (or, with --definitions, the roles one can assign)."""
    if definitions:
        rows = [{"name": r.name, "id": r.id, "description": r.description} for r in ROLES]
        if as_json:
            _emit_json(rows)
            return
        table = Table("role", "id", "permits")
        for row in rows:
            table.add_row(row["name"], row["id"], row["description"])
        _console().print(table)
        return
    with _store(_settings(home), read_only=True) as store:
        records = store.list_role_assignments()
    assigned = []
    for record in records:
        role = role_by_id(record.role_id)
        assigned.append(
            {
                "principalId": record.principal_id,
                "roleDefinitionName": role.name if role else record.role_id,
                "roleDefinitionId": record.role_id,
                "createdOn": record.created_at.isoformat(),
            }
        )
    if as_json:
        _emit_json(assigned)
        return
    if not assigned:
        click.echo(f'No role assignments yet: {command_name()} roles assign OID "<role>".')
        return
    table = Table("principal", "role", "since")
    for row in assigned:
        table.add_row(row["principalId"], row["roleDefinitionName"], row["createdOn"])
    _console().print(table)


# -- tokens ---------------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """Tokens of the local issuer: Entra ID sign-in offline, for development."""


@tokens.command("issue")
@click.option("--principal", required=True, help="The principal id (oid) the token speaks for.")
@click.option(
    "--ttl", type=click.IntRange(1, 86400), default=3600, show_default=True, help="Seconds."
)
@click.option(
    "--audience",
    default=None,
    help="The token's aud [default: CERULEAN_ENTRA_AUDIENCE, https://cognitiveservices."
    "azure.com; https://management.azure.com for the management API].",
)
@home_option
def tokens_issue(principal: str, ttl: int, audience: str | None, home: Path | None) -> None:
    """Print a token signed by this home's local issuer (its key: <home>/local-issuer.pem,
    made 0600 on first use). A server trusts it when started with --trust-local-issuer."""
    from cerulean.services.local_issuer import issue_token
    from cerulean.store.home import secure_home

    settings = _settings(home)
    secure_home(settings)
    try:
        token = issue_token(settings, principal, ttl=ttl, audience=audience)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(token)


@tokens.command("jwks")
@home_option
def tokens_jwks(home: Path | None) -> None:
    """Print the local issuer's JWKS (its public key), for another server to trust."""
    from cerulean.services.local_issuer import local_jwks
    from cerulean.store.home import secure_home

    settings = _settings(home)
    secure_home(settings)
    _emit_json(local_jwks(settings))


# -- account --------------------------------------------------------------------------------


@click.group()
def account() -> None:
    """The account's properties (disableLocalAuth)."""


@account.command("show")
@json_option
@home_option
def account_show(as_json: bool, home: Path | None) -> None:
    """Whether account keys are accepted (disableLocalAuth)."""
    with _store(_settings(home), read_only=True) as store:
        disabled = local_auth_disabled(store.account_properties())
    if as_json:
        _emit_json({"disableLocalAuth": disabled})
        return
    state = "disabled: only Entra ID tokens" if disabled else "enabled: keys and tokens"
    click.echo(f"disableLocalAuth: {str(disabled).lower()} (key authentication {state})")


@account.command("update")
@click.option(
    "--disable-local-auth/--enable-local-auth",
    "disabled",
    default=None,
    help="Refuse account keys (403 AuthenticationTypeDisabled), or accept them again.",
)
@home_option
def account_update(disabled: bool | None, home: Path | None) -> None:
    """Set disableLocalAuth, as the portal's Keys and Endpoint page or ARM's PATCH does."""
    if disabled is None:
        raise click.UsageError("say --disable-local-auth or --enable-local-auth")
    with _store(_settings(home)) as store:
        set_local_auth(store, disabled=disabled)
    click.echo(f"disableLocalAuth: {str(disabled).lower()}")
