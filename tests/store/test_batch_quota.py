"""The batch quota is checked where a validated batch starts, in the same transaction and
serialized per deployment: two replicas validating at the same moment never start more than
the deployment's enqueued-token limit together (PostgreSQL: an advisory lock; SQLite: its one
writer)."""

from __future__ import annotations

import threading
from pathlib import Path

from cerulean.settings import Settings
from cerulean.store.batches import BatchRecord, JobStore, OverQuota
from cerulean.store.home import open_store

LINES = [(0, "c0", "{}")]


def race(jobs: JobStore, runners: int, *, tokens: int, limit: int) -> list[str]:
    """``runners`` batches of one deployment start at once; what each got."""
    for i in range(runners):
        jobs.put_batch(
            BatchRecord(
                f"batch_{i}",
                "file-x",
                "/chat/completions",
                "24h",
                "v1",
                "validating",
                1,
                2,
                lease_owner=f"owner-{i}",
                lease_until=1e12,
            )
        )
    barrier = threading.Barrier(runners)
    results: list[str] = [""] * runners

    def start(i: int) -> None:
        barrier.wait()
        try:
            started = jobs.start_batch(
                f"batch_{i}",
                f"owner-{i}",
                LINES,
                deployment="gpt-4o",
                tokens=tokens,
                now=1,
                token_limit=limit,
            )
            results[i] = "started" if started else "gone"
        except OverQuota as over:
            results[i] = f"over:{over.queued}"

    threads = [threading.Thread(target=start, args=(i,)) for i in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def check(jobs: JobStore) -> None:
    results = race(jobs, 4, tokens=600, limit=1000)
    assert sorted(results)[-1] == "started" and results.count("started") == 1, results
    assert all(r == "over:600" for r in results if r != "started"), results
    statuses = [jobs.get_batch(f"batch_{i}").status for i in range(4)]  # type: ignore[union-attr]
    assert statuses.count("in_progress") == 1 and statuses.count("validating") == 3


def test_sqlite(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path / "home"))
    try:
        check(JobStore(store.engine))
    finally:
        store.close()


def test_postgres(tmp_path: Path, postgres_schema_url: str) -> None:
    store = open_store(Settings(home=tmp_path / "home", database_url=postgres_schema_url))
    try:
        check(JobStore(store.engine))
    finally:
        store.close()
