"""The Studio's usage charts: per-minute counts bucketed over a range, drawn as SVG; the
store's usage rows as their source."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cerulean.services.usage_view import GroupBy, UsageMinute, build_charts

NOW = datetime(2026, 1, 5, 12, 30, 20, tzinfo=timezone.utc)


class RecentUsage:
    """A usage source in memory: one row per request, its minute and deployment."""

    description = "test rows"

    def __init__(self) -> None:
        self.rows: list[UsageMinute] = []

    def add(
        self,
        deployment: str,
        *,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        duration_s: float,
        now: datetime,
    ) -> None:
        minute = now.replace(second=0, microsecond=0)
        errors = 1 if status >= 400 else 0
        self.rows.append(
            UsageMinute(
                minute, deployment, 1, prompt_tokens, completion_tokens, errors, duration_s * 1000
            )
        )

    def minutes(self, since: datetime, by: GroupBy) -> list[UsageMinute]:
        return [r for r in self.rows if r.minute >= since]


def charts(usage: RecentUsage, range_name: str = "hour") -> dict[str, object]:
    return {c.metric: c for c in build_charts(usage, range_name, "deployment", now=NOW)}


def test_requests_tokens_errors_and_latency_are_counted_per_minute() -> None:
    usage = RecentUsage()
    for status, ms in ((200, 100), (200, 300), (429, 2)):
        usage.add(
            "gpt-4",
            status=status,
            prompt_tokens=10,
            completion_tokens=5,
            duration_s=ms / 1000,
            now=NOW,
        )
    usage.add("other", status=200, prompt_tokens=1, completion_tokens=1, duration_s=0.1, now=NOW)
    by_metric = charts(usage)
    requests = by_metric["requests"]
    assert requests.series["gpt-4"][-1] == 3 and requests.series["other"][-1] == 1  # type: ignore[attr-defined]
    assert requests.total == 4  # type: ignore[attr-defined]
    assert by_metric["prompt_tokens"].total == 31  # type: ignore[attr-defined]
    assert by_metric["errors"].series["gpt-4"][-1] == 1  # type: ignore[attr-defined]
    latency = by_metric["latency_ms"].series["gpt-4"][-1]  # type: ignore[attr-defined]
    assert abs(latency - 134) < 1  # (100 + 300 + 2) / 3


def test_old_minutes_leave_the_hour_but_stay_in_the_week() -> None:
    usage = RecentUsage()
    usage.add(
        "gpt-4",
        status=200,
        prompt_tokens=1,
        completion_tokens=1,
        duration_s=0.1,
        now=NOW - timedelta(hours=3),
    )
    assert charts(usage, "hour")["requests"].total == 0  # type: ignore[attr-defined]
    assert charts(usage, "day")["requests"].total == 1  # type: ignore[attr-defined]
    assert charts(usage, "week")["requests"].total == 1  # type: ignore[attr-defined]


def test_the_svg_is_accessible_and_escapes_names() -> None:
    usage = RecentUsage()
    usage.add("<b>", status=200, prompt_tokens=1, completion_tokens=1, duration_s=0.1, now=NOW)
    svg = build_charts(usage, "hour", "deployment", now=NOW)[0].svg()
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert "<title" in svg and "total 1" in svg
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count('class="bar"') == 1


def test_the_store_source_reads_the_usage_accounting_rows(tmp_path: object) -> None:
    from pathlib import Path

    from cerulean.services.usage import Served, aggregate
    from cerulean.services.usage_view import StoreUsage
    from cerulean.store.sql import SqlStore

    store = SqlStore(f"sqlite:///{Path(str(tmp_path)) / 'u.db'}")
    at = NOW.timestamp() - 60
    entries = [
        Served(at, "gpt-4", "key1", "chat.completions", 200, 10, 5, 0.1, 0.5),
        Served(at, "gpt-4", "key2", "chat.completions", 429, 0, 0, None, 0.01, throttled=True),
        Served(at, "ada", "key1", "embeddings", 200, 7, 0, None, 0.2),
    ]
    store.add_usage(aggregate(entries))
    source = StoreUsage(store, recording=True, retention_days=90)
    by_key = {c.metric: c for c in build_charts(source, "hour", "key", now=NOW)}
    assert by_key["requests"].series["key1"][-2] == 2
    assert by_key["errors"].series["key2"][-2] == 1
    by_deployment = {c.metric: c for c in build_charts(source, "hour", "deployment", now=NOW)}
    assert by_deployment["prompt_tokens"].series["gpt-4"][-2] == 10
    assert by_deployment["prompt_tokens"].total == 17
    assert "kept 90 days" in source.description
    store.close()
