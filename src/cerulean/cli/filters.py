"""``cerulean blocklists`` and ``cerulean policies``: content filtering from the command line.

    cerulean blocklists create words
    cerulean blocklists add words zanzibar
    cerulean policies create strict --blocklist words
    cerulean policies assign gpt-35-turbo strict

The same operations as the ARM routes (``raiBlocklists``, ``raiPolicies``), on the store of a
data directory; a running server applies them within ``CERULEAN_CONTENT_FILTER_CACHE_SECONDS``
(5 s by default). See docs/content-filtering.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
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
from cerulean.services import deployments as deployment_service
from cerulean.services.filtering import manage
from cerulean.services.filtering.policy import DEFAULT_POLICY

__all__ = ["blocklists", "policies"]


@click.group()
def blocklists() -> None:
    """Custom blocklists: exact phrases and regular expressions (RE2) to filter."""


@blocklists.command("create")
@click.argument("name")
@click.option("--description", default=None, help="What the list is for.")
@home_option
@_refusals
def blocklists_create(name: str, description: str | None, home: Path | None) -> None:
    """Create (or describe again) blocklist NAME."""
    with _store(_settings(home)) as store:
        record, created = manage.put_blocklist(store, name, description)
    click.echo(f"blocklist {record.name} {'created' if created else 'updated'}")


@blocklists.command("add")
@click.argument("name")
@click.argument("pattern")
@click.option("--regex", is_flag=True, help="PATTERN is a regular expression (RE2 syntax).")
@click.option("--item", default=None, help="The item's name [default: item-N].")
@home_option
@_refusals
def blocklists_add(
    name: str, pattern: str, regex: bool, item: str | None, home: Path | None
) -> None:
    """Add PATTERN to blocklist NAME (an exact phrase, any case, whole words; or --regex)."""
    with _store(_settings(home)) as store:
        record = manage.add_item(store, name, pattern, regex, item)
    click.echo(f"{record.blocklist}/{record.name}: {record.pattern!r}{' (regex)' if regex else ''}")


@blocklists.command("remove")
@click.argument("name")
@click.argument("item")
@home_option
@_refusals
def blocklists_remove(name: str, item: str, home: Path | None) -> None:
    """Remove ITEM from blocklist NAME."""
    with _store(_settings(home)) as store:
        gone = manage.delete_item(store, name, item)
    click.echo(f"{name}/{item} {'removed' if gone else 'was not there'}")


@blocklists.command("delete")
@click.argument("name")
@home_option
@_refusals
def blocklists_delete(name: str, home: Path | None) -> None:
    """Delete blocklist NAME and its items (refused while a policy uses it)."""
    with _store(_settings(home)) as store:
        gone = manage.delete_blocklist(store, name)
    click.echo(f"blocklist {name} {'deleted' if gone else 'was not there'}")


@blocklists.command("list")
@click.argument("name", required=False)
@json_option
@home_option
@_refusals
def blocklists_list(name: str | None, as_json: bool, home: Path | None) -> None:
    """The blocklists, or the items of blocklist NAME."""
    with _store(_settings(home), read_only=True) as store:
        if name is None:
            rows: list[dict[str, Any]] = [
                {
                    "name": r.name,
                    "description": r.description,
                    "items": len(store.list_blocklist_items(r.name)),
                }
                for r in store.list_blocklists()
            ]
        else:
            listed = manage.get_blocklist(store, name)
            rows = [
                {"name": i.name, "pattern": i.pattern, "isRegex": i.is_regex}
                for i in store.list_blocklist_items(listed.name)
            ]
    _show(rows, as_json)


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("(none)")
        return
    table = Table(*rows[0])
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row.values()))
    _console().print(table)


@click.group()
def policies() -> None:
    """Content-filter policies (raiPolicies) and the deployments that use them."""


@policies.command("create")
@click.argument("name")
@click.option(
    "--blocklist",
    "lists",
    multiple=True,
    metavar="LIST[:prompt|:completion]",
    help="A blocklist to apply (both sides unless one is named); repeatable.",
)
@click.option(
    "--mode",
    type=click.Choice(["Default", "Deferred", "Blocking", "Asynchronous_filter"]),
    default="Default",
    show_default=True,
    help="Asynchronous_filter: streams send text at once, annotations after.",
)
@click.option(
    "--threshold",
    type=click.Choice(["Low", "Medium", "High"]),
    default="Medium",
    show_default=True,
    help="The four harm categories' threshold, both sides.",
)
@click.option("--no-jailbreak", is_flag=True, help="Turn the prompt shield off.")
@home_option
@_refusals
def policies_create(
    name: str,
    lists: tuple[str, ...],
    mode: str,
    threshold: str,
    no_jailbreak: bool,
    home: Path | None,
) -> None:
    """Create or replace policy NAME (based on Microsoft.DefaultV2)."""
    filters: list[dict[str, Any]] = [
        {"name": n, "enabled": True, "severityThreshold": threshold, "blocking": True, "source": s}
        for s in ("Prompt", "Completion")
        for n in ("Hate", "Sexual", "Violence", "Selfharm")
    ]
    filters.append(
        {"name": "Jailbreak", "enabled": not no_jailbreak, "blocking": True, "source": "Prompt"}
    )
    uses = []
    for spec in lists:
        list_name, _, side = spec.partition(":")
        use: dict[str, Any] = {"blocklistName": list_name, "blocking": True}
        if side:
            if side.lower() not in ("prompt", "completion"):
                raise click.BadParameter(
                    f"{spec}: the side is prompt or completion", param_hint="--blocklist"
                )
            use["source"] = side.capitalize()
        uses.append(use)
    properties = {
        "mode": mode,
        "basePolicyName": DEFAULT_POLICY,
        "contentFilters": filters,
        "customBlocklists": uses,
    }
    with _store(_settings(home)) as store:
        created = manage.put_policy(store, name, properties)
    click.echo(f"policy {name} {'created' if created else 'replaced'}")


@policies.command("list")
@json_option
@home_option
def policies_list(as_json: bool, home: Path | None) -> None:
    """The policies (built-in ones too) and the deployments using each."""
    with _store(_settings(home), read_only=True) as store:
        known = manage.list_policies(store)
        uses = manage.policy_users(store)
    rows = [
        {
            "name": name,
            "type": props.get("type", ""),
            "mode": props.get("mode") or "Default",
            "blocklists": ", ".join(
                b["blocklistName"] for b in props.get("customBlocklists") or []
            ),
            "deployments": ", ".join(uses.get(name.lower(), [])),
        }
        for name, props in known
    ]
    _show(rows, as_json)


@policies.command("show")
@click.argument("name")
@home_option
@_refusals
def policies_show(name: str, home: Path | None) -> None:
    """Policy NAME's properties, as the ARM API returns them."""
    with _store(_settings(home), read_only=True) as store:
        spelled, properties = manage.get_policy(store, name)
    _emit_json({"name": spelled, "properties": properties})


@policies.command("delete")
@click.argument("name")
@home_option
@_refusals
def policies_delete(name: str, home: Path | None) -> None:
    """Delete policy NAME (refused while a deployment uses it)."""
    with _store(_settings(home)) as store:
        gone = manage.delete_policy(store, name)
    click.echo(f"policy {name} {'deleted' if gone else 'was not there'}")


@policies.command("assign")
@click.argument("deployment")
@click.argument("policy")
@home_option
@_refusals
def policies_assign(deployment: str, policy: str, home: Path | None) -> None:
    """Make DEPLOYMENT use POLICY (Microsoft.DefaultV2: the default)."""
    with _store(_settings(home)) as store:
        record, spelled = deployment_service.assign_policy(store, deployment, policy)
    click.echo(f"deployment {record.name} uses policy {spelled}")
