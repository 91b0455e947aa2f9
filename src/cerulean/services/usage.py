"""Usage accounting: what every data-plane request did, written per minute off the request path.

:class:`UsageRecorder` takes one :class:`Served` entry per finished request (the access
middleware adds it: a list append, no I/O, no await), and its background task
(:meth:`UsageRecorder.run`) adds the entries up per minute, deployment, caller, operation and
status and writes them to the store in one transaction every ``interval`` seconds (default 1).
So a request never waits on the database, and a process killed with ``kill -9`` loses at most
the entries of the last interval. A failed write keeps its rows for the next attempt (up to
``max_pending`` rows, then the oldest are dropped with a warning). Rows older than the retention
are deleted once an hour.

The queries (:func:`usage_series`, :func:`usage_totals`) read the per-minute rows back in
minute, hour or day buckets, for the CLI (``cerulean usage``), the ARM ``usages`` route and
Studio's charts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Literal

from cerulean.store.base import Store, UsageRecord

__all__ = [
    "Bucket",
    "Served",
    "UsageBucket",
    "UsageRecorder",
    "UsageTotal",
    "aggregate",
    "usage_series",
    "usage_totals",
]

logger = logging.getLogger(__name__)

Bucket = Literal["minute", "hour", "day"]
GroupBy = Literal["deployment", "caller"]
_PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class Served:
    """One finished data-plane request, as the access middleware saw it."""

    ended_at: float  # time.time() when the response ended
    deployment: str
    caller: str  # "key1", "key2", an Entra principal id, or "" (unknown)
    operation: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    ttft: float | None  # seconds from arrival to the first generated output
    duration: float  # seconds from arrival to the end of the response
    throttled: bool = False


def aggregate(entries: Iterable[Served]) -> list[UsageRecord]:
    """``entries`` added up per minute, deployment, caller, operation and status."""
    rows: dict[tuple[datetime, str, str, str, int], UsageRecord] = {}
    for entry in entries:
        minute = datetime.fromtimestamp(entry.ended_at - entry.ended_at % 60, tz=timezone.utc)
        key = (minute, entry.deployment, entry.caller, entry.operation, entry.status)
        row = rows.get(key)
        if row is None:
            row = UsageRecord(minute, *key[1:])
        rows[key] = replace(
            row,
            requests=row.requests + 1,
            prompt_tokens=row.prompt_tokens + entry.prompt_tokens,
            completion_tokens=row.completion_tokens + entry.completion_tokens,
            throttled=row.throttled + int(entry.throttled),
            ttft_sum=row.ttft_sum + (entry.ttft or 0.0),
            ttft_count=row.ttft_count + int(entry.ttft is not None),
            duration_sum=row.duration_sum + entry.duration,
            duration_max=max(row.duration_max, entry.duration),
        )
    return list(rows.values())


def _merge(rows: Sequence[UsageRecord]) -> list[UsageRecord]:
    """Rows with the same key made one (a retried batch meeting a new one)."""
    merged: dict[tuple[datetime, str, str, str, int], UsageRecord] = {}
    for row in rows:
        key = (row.minute, row.deployment, row.caller, row.operation, row.status)
        old = merged.get(key)
        merged[key] = row if old is None else _added(old, row)
    return list(merged.values())


def _added(a: UsageRecord, b: UsageRecord) -> UsageRecord:
    return replace(
        a,
        requests=a.requests + b.requests,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        throttled=a.throttled + b.throttled,
        ttft_sum=a.ttft_sum + b.ttft_sum,
        ttft_count=a.ttft_count + b.ttft_count,
        duration_sum=a.duration_sum + b.duration_sum,
        duration_max=max(a.duration_max, b.duration_max),
    )


class UsageRecorder:
    """The in-memory buffer of finished requests and the task that writes it (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        interval: float = 1.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention = timedelta(days=retention_days)
        self.interval = interval
        self._max_pending = max_pending
        self._clock = clock
        self._buffer: list[Served] = []
        self._pending: list[UsageRecord] = []  # rows of a failed write, tried again
        self._pruned_at: float | None = None
        self._lock = asyncio.Lock()

    def add(self, entry: Served) -> None:
        """Buffer one finished request (the request path: no I/O)."""
        self._buffer.append(entry)

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> int:
        """Write what is buffered now (and prune old minutes once an hour); rows written."""
        async with self._lock:
            entries, self._buffer = self._buffer, []
            rows = _merge([*self._pending, *aggregate(entries)])
            self._pending = []
            if rows:
                try:
                    await asyncio.to_thread(self._store.add_usage, rows)
                except Exception:
                    self._keep(rows)
                    return 0
            await self._prune()
            return len(rows)

    def _keep(self, rows: list[UsageRecord]) -> None:
        dropped = max(len(rows) - self._max_pending, 0)
        self._pending = rows[dropped:]
        logger.warning(
            "could not write %d usage rows to the store; retrying%s",
            len(rows),
            f" (dropped the {dropped} oldest)" if dropped else "",
            exc_info=True,
        )

    async def _prune(self) -> None:
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        before = datetime.fromtimestamp(now, tz=timezone.utc) - self._retention
        try:
            gone = await asyncio.to_thread(self._store.prune_usage, before)
        except Exception:
            logger.warning("could not delete old usage rows", exc_info=True)
            return
        if gone:
            logger.info("deleted %d usage rows older than %s", gone, before.isoformat())


# -- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageBucket:
    """Usage in one time bucket (of one deployment or caller when the series is grouped).

    ``errors`` counts answers with a status of 400 or more (``throttled`` among them: the
    deployment's rate-limit 429s). Latencies are seconds; None when no request had one.
    """

    start: datetime
    deployment: str | None
    caller: str | None
    requests: int
    errors: int
    throttled: int
    prompt_tokens: int
    completion_tokens: int
    ttft_mean: float | None
    duration_mean: float | None
    duration_max: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _bucket_start(minute: datetime, bucket: Bucket) -> datetime:
    if bucket == "hour":
        return minute.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        return minute.replace(hour=0, minute=0, second=0, microsecond=0)
    return minute.replace(second=0, microsecond=0)


_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass
class _Sum:
    requests: int = 0
    errors: int = 0
    throttled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_sum: float = 0.0
    ttft_count: int = 0
    duration_sum: float = 0.0
    duration_max: float = 0.0

    def add(self, row: UsageRecord) -> None:
        self.requests += row.requests
        self.errors += row.requests if row.status >= 400 else 0
        self.throttled += row.throttled
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.ttft_sum += row.ttft_sum
        self.ttft_count += row.ttft_count
        self.duration_sum += row.duration_sum
        self.duration_max = max(self.duration_max, row.duration_max)

    def bucket(self, start: datetime, deployment: str | None, caller: str | None) -> UsageBucket:
        return UsageBucket(
            start=start,
            deployment=deployment,
            caller=caller,
            requests=self.requests,
            errors=self.errors,
            throttled=self.throttled,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_mean=self.ttft_sum / self.ttft_count if self.ttft_count else None,
            duration_mean=self.duration_sum / self.requests if self.requests else None,
            duration_max=self.duration_max if self.requests else None,
        )


async def usage_series(
    store: Store,
    *,
    deployment: str | None,
    caller: str | None,
    since: datetime,
    bucket: Bucket,
    until: datetime | None = None,
    by: GroupBy | None = None,
    fill: bool = False,
) -> list[UsageBucket]:
    """Usage from ``since`` (cut down to its bucket) to before ``until`` (default: now), in
    ``bucket``-long buckets (UTC), oldest first.

    ``deployment`` and ``caller`` (None: all) filter the rows; ``by`` gives one series per
    deployment or per caller (sorted by start, then name), else one series for everything
    that matched. ``fill`` adds empty buckets where nothing happened, so a chart's x axis is
    even (for a grouped series, within each group's names seen).
    """
    since = since.astimezone(timezone.utc)
    rows = await asyncio.to_thread(
        store.usage, since, until=until, deployment=deployment, caller=caller
    )
    sums: dict[tuple[datetime, str | None], _Sum] = {}
    for row in rows:
        name = row.deployment if by == "deployment" else row.caller if by == "caller" else None
        key = (_bucket_start(row.minute, bucket), name)
        sums.setdefault(key, _Sum()).add(row)
    if fill:
        names = {name for _, name in sums} or {None}
        end = (until or datetime.now(timezone.utc)).astimezone(timezone.utc)
        start = _bucket_start(since, bucket)
        while start < end:
            for name in names:
                sums.setdefault((start, name), _Sum())
            start += _STEP[bucket]
    out: list[UsageBucket] = []
    for (start, name), total in sorted(
        sums.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        out.append(
            total.bucket(
                start,
                name if by == "deployment" else deployment,
                name if by == "caller" else caller,
            )
        )
    return out


@dataclass(frozen=True)
class UsageTotal:
    """A deployment's usage by one caller since a time: what ``cerulean usage`` lists."""

    deployment: str
    caller: str
    requests: int
    errors: int
    throttled: int
    prompt_tokens: int
    completion_tokens: int
    ttft_mean: float | None
    duration_mean: float | None
    duration_max: float | None


def usage_totals(
    store: Store, *, since: datetime, deployment: str | None = None
) -> list[UsageTotal]:
    """Totals per deployment and caller since ``since`` (blocking; for the CLI)."""
    sums: dict[tuple[str, str], _Sum] = {}
    for row in store.usage(since, deployment=deployment):
        sums.setdefault((row.deployment, row.caller), _Sum()).add(row)
    out = []
    for (name, caller), total in sorted(sums.items()):
        b = total.bucket(since, name, caller)
        out.append(
            UsageTotal(
                name,
                caller,
                b.requests,
                b.errors,
                b.throttled,
                b.prompt_tokens,
                b.completion_tokens,
                b.ttft_mean,
                b.duration_mean,
                b.duration_max,
            )
        )
    return out
