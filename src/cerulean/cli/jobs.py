"""``cerulean files list|show|rm`` and ``cerulean batches list|show|cancel``.

Like the other control-plane commands they work on the store of a data directory (``--home``,
or ``CERULEAN_DATABASE_URL``), whether or not a server runs on it: a cancel is picked up by the
server's batch runner. ``batches show ID --watch`` follows a running batch with a progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cerulean.cli.control import _emit_json, _settings, _store, home_option, json_option
from cerulean.services.batches import batch_object
from cerulean.services.files import FileService, file_object
from cerulean.store.batches import JobStore
from cerulean.store.sql import SqlStore

__all__ = ["batches", "files"]

_TERMINAL = ("completed", "failed", "expired", "cancelled")


@contextmanager
def _jobs(home: Path | None) -> Iterator[tuple[JobStore, FileService]]:
    settings = _settings(home)
    with _store(settings, read_only=True) as store:
        assert isinstance(store, SqlStore)
        jobs = JobStore(store.engine)
        yield jobs, FileService(settings, jobs)


def _when(stamp: int | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _console() -> Console:
    return Console(width=160)


# -- files ----------------------------------------------------------------------------------------


@click.group()
def files() -> None:
    """Uploaded and batch-produced files (the Files API's)."""


@files.command("list")
@click.option("--purpose", default=None, help="Only files of this purpose (batch, batch_output…).")
@json_option
@home_option
def files_list(purpose: str | None, as_json: bool, home: Path | None) -> None:
    """Show files, newest first."""
    with _jobs(home) as (jobs, _):
        records = jobs.list_files(purpose=purpose, after=None, limit=10_000, descending=True)
    if as_json:
        _emit_json([file_object(r) for r in records])
        return
    table = Table("id", "filename", "purpose", "bytes", "created", "expires")
    for r in records:
        table.add_row(
            r.id, r.filename, r.purpose, f"{r.bytes:,}", _when(r.created_at), _when(r.expires_at)
        )
    _console().print(table)


@files.command("show")
@click.argument("file_id")
@json_option
@home_option
def files_show(file_id: str, as_json: bool, home: Path | None) -> None:
    """Show one file's metadata."""
    with _jobs(home) as (jobs, service):
        record = jobs.get_file(file_id)
        path = service.path(file_id)
    if record is None:
        raise click.ClickException(f"no file {file_id}")
    body = file_object(record)
    if as_json:
        _emit_json(body)
        return
    for key, value in body.items():
        click.echo(f"{key:>15}: {value}")
    click.echo(f"{'stored at':>15}: {path}")


@files.command("rm")
@click.argument("file_ids", nargs=-1, required=True)
@home_option
def files_rm(file_ids: tuple[str, ...], home: Path | None) -> None:
    """Delete files (their metadata, then their bytes)."""
    with _jobs(home) as (jobs, service):
        for file_id in file_ids:
            if jobs.get_file(file_id) is None:
                raise click.ClickException(f"no file {file_id}")
            service.remove(file_id)
            click.echo(f"deleted {file_id}")


# -- batches --------------------------------------------------------------------------------------


@click.group()
def batches() -> None:
    """Batch jobs (the Batch API's): list, show (--watch), cancel."""


def _view(jobs: JobStore, batch_id: str) -> dict[str, Any]:
    record = jobs.get_batch(batch_id)
    if record is None:
        raise click.ClickException(f"no batch {batch_id}")
    counts = None if record.status in _TERMINAL else jobs.line_counts(batch_id)
    return batch_object(record, counts)


@batches.command("list")
@click.option("--limit", default=100, show_default=True, help="Most batches shown (newest first).")
@json_option
@home_option
def batches_list(limit: int, as_json: bool, home: Path | None) -> None:
    """Show batches, newest first, with their progress."""
    with _jobs(home) as (jobs, _):
        views = [_view(jobs, r.id) for r in jobs.list_batches(after=None, limit=limit)]
    if as_json:
        _emit_json(views)
        return
    table = Table("id", "status", "deployment", "done", "failed", "total", "created")
    for v in views:
        counts = v["request_counts"]
        table.add_row(
            v["id"],
            v["status"],
            v.get("model") or "-",
            str(counts["completed"]),
            str(counts["failed"]),
            str(counts["total"]),
            _when(v["created_at"]),
        )
    _console().print(table)


def _print_batch(view: dict[str, Any]) -> None:
    counts = view["request_counts"]
    for key in (
        "id",
        "status",
        "model",
        "endpoint",
        "input_file_id",
        "output_file_id",
        "error_file_id",
    ):
        click.echo(f"{key:>15}: {view.get(key) or '-'}")
    done, failed, total = counts["completed"], counts["failed"], counts["total"]
    click.echo(f"{'requests':>15}: {done} done, {failed} failed, {total} in all")
    for key in (
        "created_at",
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "cancelled_at",
    ):
        if view.get(key):
            click.echo(f"{key:>15}: {_when(view[key])}")
    for error in (view.get("errors") or {}).get("data", []):
        where = f" (line {error['line']})" if error.get("line") else ""
        click.echo(f"{'error':>15}: {error['code']}{where}: {error['message']}")


def _watch(jobs: JobStore, batch_id: str, interval: float) -> dict[str, Any]:
    view = _view(jobs, batch_id)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_console()) as progress:
        task = progress.add_task(view["status"], total=None, failed=0)
        while True:
            counts = view["request_counts"]
            progress.update(
                task,
                description=f"{batch_id} {view['status']}",
                total=counts["total"] or None,
                completed=counts["completed"] + counts["failed"],
                failed=counts["failed"],
            )
            if view["status"] in _TERMINAL:
                return view
            time.sleep(interval)
            view = _view(jobs, batch_id)


@batches.command("show")
@click.argument("batch_id")
@click.option("--watch", is_flag=True, help="Follow the batch with a progress bar until it ends.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between looks (--watch).")
@json_option
@home_option
def batches_show(
    batch_id: str, watch: bool, interval: float, as_json: bool, home: Path | None
) -> None:
    """Show one batch: status, counts, files, timestamps, validation errors."""
    with _jobs(home) as (jobs, _):
        view = _watch(jobs, batch_id, interval) if watch else _view(jobs, batch_id)
    if as_json:
        _emit_json(view)
        return
    _print_batch(view)


@batches.command("cancel")
@click.argument("batch_id")
@home_option
def batches_cancel(batch_id: str, home: Path | None) -> None:
    """Cancel a batch: lines done so far go to its output file (status cancelling → cancelled)."""
    with _jobs(home) as (jobs, _):
        record = jobs.get_batch(batch_id)
        if record is None:
            raise click.ClickException(f"no batch {batch_id}")
        moved = jobs.update_batch(
            batch_id,
            statuses=("validating", "in_progress"),
            status="cancelling",
            cancelling_at=int(time.time()),
        )
        if not moved and record.status not in ("cancelling", "cancelled"):
            raise click.ClickException(
                f"batch {batch_id} has ended ({record.status}); nothing to cancel"
            )
    click.echo(f"{batch_id}: cancelling (a running server finishes the cancel)")
