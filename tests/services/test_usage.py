"""Usage accounting: the buffer and its flushes, the per-minute rows, the bucketed queries."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cerulean.services.usage import Served, UsageRecorder, aggregate, usage_series, usage_totals
from cerulean.store import SqlStore
from cerulean.store.base import UsageRecord

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc).timestamp()


def served(at: float, **changes: object) -> Served:
    values: dict[str, object] = {
        "ended_at": at,
        "deployment": "gpt-4o",
        "caller": "key1",
        "operation": "chat_completion",
        "status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "ttft": 0.1,
        "duration": 0.5,
    }
    values.update(changes)
    return Served(**values)  # type: ignore[arg-type]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    return SqlStore(f"sqlite:///{tmp_path / 'u.db'}")


def test_aggregate_adds_up_per_minute_and_key() -> None:
    rows = aggregate(
        [
            served(T0 + 1),
            served(T0 + 59, completion_tokens=6, ttft=None, duration=2.0),
            served(T0 + 60),
            served(T0 + 2, status=429, prompt_tokens=0, completion_tokens=0, throttled=True),
        ]
    )
    by_key = {(r.minute.minute, r.status): r for r in rows}
    first = by_key[(0, 200)]
    assert (first.requests, first.prompt_tokens, first.completion_tokens) == (2, 20, 10)
    assert (first.ttft_count, first.ttft_sum, first.duration_sum) == (1, 0.1, 2.5)
    assert first.duration_max == 2.0
    assert by_key[(1, 200)].requests == 1
    assert (by_key[(0, 429)].throttled, by_key[(0, 429)].requests) == (1, 1)


async def test_recorder_flushes_in_the_background_and_on_close(store: SqlStore) -> None:
    recorder = UsageRecorder(store, retention_days=1, interval=0.05, clock=lambda: T0 + 120)
    task = asyncio.create_task(recorder.run())
    recorder.add(served(T0))
    await asyncio.sleep(0.3)
    assert sum(r.requests for r in store.usage(datetime.fromtimestamp(T0, timezone.utc))) == 1
    recorder.add(served(T0 + 1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = store.usage(datetime.fromtimestamp(T0, timezone.utc))
    assert [(r.requests, r.prompt_tokens) for r in rows] == [(2, 20)]


class FailingOnce:
    """A store whose first write fails (a database outage)."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.failed = False

    def add_usage(self, rows: list[UsageRecord]) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("database unreachable")
        self.inner.add_usage(rows)

    def prune_usage(self, before: datetime) -> int:
        return self.inner.prune_usage(before)


async def test_a_failed_write_is_retried_not_lost(store: SqlStore) -> None:
    flaky = FailingOnce(store)
    recorder = UsageRecorder(flaky, retention_days=1, clock=lambda: T0)  # type: ignore[arg-type]
    recorder.add(served(T0))
    assert await recorder.flush() == 0
    recorder.add(served(T0 + 1))
    assert await recorder.flush() == 1
    (row,) = store.usage(datetime.fromtimestamp(T0, timezone.utc))
    assert row.requests == 2


async def test_retention_prunes_old_minutes(store: SqlStore) -> None:
    now = T0 + 3 * 86400
    recorder = UsageRecorder(store, retention_days=2, clock=lambda: now)
    recorder.add(served(T0))
    recorder.add(served(now - 60))
    await recorder.flush()  # writes both, then prunes (first flush): the old one goes
    rows = store.usage(datetime.fromtimestamp(T0 - 60, timezone.utc))
    assert [r.minute.timestamp() for r in rows] == [now - 60 - (now - 60) % 60]


async def test_series_buckets_groups_and_fills(store: SqlStore) -> None:
    store.add_usage(
        aggregate(
            [
                served(T0 + 10),
                served(T0 + 70, caller="key2", status=400, completion_tokens=0, ttft=None),
                served(T0 + 3600 + 5, deployment="gpt-35-turbo"),
            ]
        )
    )
    since = datetime.fromtimestamp(T0, timezone.utc)
    hourly = await usage_series(store, deployment=None, caller=None, since=since, bucket="hour")
    assert [(b.start.hour, b.requests, b.errors) for b in hourly] == [(10, 2, 1), (11, 1, 0)]
    assert hourly[0].prompt_tokens == 20 and hourly[0].completion_tokens == 4
    assert hourly[0].ttft_mean == pytest.approx(0.1) and hourly[0].duration_mean == 0.5
    minutes = await usage_series(
        store,
        deployment="gpt-4o",
        caller=None,
        since=since,
        bucket="minute",
        until=since + timedelta(minutes=3),
        by="caller",
        fill=True,
    )
    assert [(b.start.minute, b.caller, b.requests) for b in minutes] == [
        (0, "key1", 1),
        (0, "key2", 0),
        (1, "key1", 0),
        (1, "key2", 1),
        (2, "key1", 0),
        (2, "key2", 0),
    ]
    assert all(b.deployment == "gpt-4o" for b in minutes)
    daily = await usage_series(store, deployment=None, caller="key1", since=since, bucket="day")
    assert [(b.requests, b.caller) for b in daily] == [(2, "key1")]
    totals = usage_totals(store, since=since)
    assert [(t.deployment, t.caller, t.requests, t.errors) for t in totals] == [
        ("gpt-35-turbo", "key1", 1, 0),
        ("gpt-4o", "key1", 1, 0),
        ("gpt-4o", "key2", 1, 1),
    ]
