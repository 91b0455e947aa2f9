"""`cerulean files` and `cerulean batches`, run in-process with click's runner on a real store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from cerulean.cli import main
from cerulean.services.files import FileService
from cerulean.settings import Settings
from cerulean.store.batches import BatchRecord, JobStore
from cerulean.store.home import open_store


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_files_and_batches_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    store = open_store(settings)
    jobs = JobStore(store.engine)
    service = FileService(settings, jobs)
    made = service.write_produced("in.jsonl", "batch", iter(["{}"]), expires_after=None)
    batch = BatchRecord("batch_1", made.id, "/chat/completions", "24h", "v1", "in_progress", 1, 2)
    jobs.put_batch(batch)
    store.close()

    listed = run(home, "files", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [f["id"] for f in json.loads(listed.output)] == [made.id]
    shown = run(home, "batches", "show", "batch_1", "--json")
    assert json.loads(shown.output)["status"] == "in_progress"
    table = run(home, "batches", "list")
    assert "batch_1" in table.output and "in_progress" in table.output
    cancelled = run(home, "batches", "cancel", "batch_1")
    assert cancelled.exit_code == 0 and "cancelling" in cancelled.output
    assert json.loads(run(home, "batches", "show", "batch_1", "--json").output)["status"] == (
        "cancelling"
    )
    assert run(home, "batches", "show", "batch_nope").exit_code == 1
    removed = run(home, "files", "rm", made.id)
    assert removed.exit_code == 0 and not (home / "files" / made.id).exists()
    assert json.loads(run(home, "files", "list", "--json").output) == []


def test_watch_ends_with_the_batch(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    store = open_store(settings)
    JobStore(store.engine).put_batch(
        BatchRecord("batch_2", "file-x", "/chat/completions", "24h", "v1", "completed", 1, 2)
    )
    store.close()
    watched = run(home, "batches", "show", "batch_2", "--watch", "--interval", "0.01")
    assert watched.exit_code == 0, watched.output
    assert "completed" in watched.output
