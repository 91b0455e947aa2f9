"""The Studio's usage charts: per-minute counts bucketed over a range, drawn as SVG."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cerulean.services.usage_view import RecentUsage, build_charts

NOW = datetime(2026, 1, 5, 12, 30, 20, tzinfo=timezone.utc)


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
