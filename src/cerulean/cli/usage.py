"""``cerulean usage``: what each deployment served, per caller, from the store's usage rows."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from rich.table import Table

from cerulean.cli.control import _console, _emit_json, _settings, _store, home_option, json_option
from cerulean.services.usage import UsageTotal, usage_totals

__all__ = ["usage"]

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` before ``now``, or an ISO date or date-time (UTC unless
    it names its zone)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if match is not None:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is neither a duration (30m, 24h, 7d, 2w) nor an ISO date (2026-12-01, "
            "2026-12-01T09:00)",
            param_hint="--since",
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


@click.command()
@click.option("--deployment", default=None, help="Only this deployment.")
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="From when: a duration back from now (30m, 24h, 7d) or an ISO date or date-time.",
)
@json_option
@home_option
def usage(deployment: str | None, since: str, as_json: bool, home: Path | None) -> None:
    """Requests, tokens, errors and latency per deployment and caller (key1, key2 or an Entra
    principal), from the usage a server records each minute."""
    start = parse_since(since, datetime.now(timezone.utc))
    with _store(_settings(home), read_only=True) as store:
        totals = usage_totals(store, since=start, deployment=deployment)
    if as_json:
        _emit_json({"since": start.isoformat(), "usage": [_json(t) for t in totals]})
        return
    table = Table(
        "deployment",
        "caller",
        "requests",
        "errors",
        "throttled",
        "prompt tokens",
        "completion tokens",
        "mean TTFT ms",
        "mean ms",
        "max ms",
        title=f"Usage since {start.isoformat(timespec='minutes')}",
    )
    for total in totals:
        table.add_row(
            total.deployment,
            total.caller or "-",
            f"{total.requests:,}",
            f"{total.errors:,}",
            f"{total.throttled:,}",
            f"{total.prompt_tokens:,}",
            f"{total.completion_tokens:,}",
            _ms(total.ttft_mean),
            _ms(total.duration_mean),
            _ms(total.duration_max),
        )
    if not totals:
        click.echo(f"No usage recorded since {start.isoformat(timespec='minutes')}.")
        return
    _console().print(table)


def _json(total: UsageTotal) -> dict[str, object]:
    return {**asdict(total), "total_tokens": total.prompt_tokens + total.completion_tokens}
