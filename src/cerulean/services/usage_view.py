"""The Studio's usage charts: per-minute usage, bucketed over an hour, a day or a week, drawn as
inline SVG on the server (no script, no chart library).

The charts read a :class:`UsageSource`: :class:`StoreUsage`, the usage accounting's per-minute
rows in the store (every process sharing the store, callers told apart). The page says which
source it shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Literal, Protocol

from cerulean.store.base import Store

__all__ = [
    "METRICS",
    "RANGES",
    "Chart",
    "GroupBy",
    "StoreUsage",
    "UsageMinute",
    "UsageSource",
    "build_charts",
    "colors",
    "render_svg",
]

GroupBy = Literal["deployment", "key"]


@dataclass(frozen=True)
class UsageMinute:
    """What one series (a deployment, or a caller) did in one minute (``minute``: its start)."""

    minute: datetime
    series: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    duration_ms: float = 0.0  # summed over the minute's requests


class UsageSource(Protocol):
    """Where the usage page's figures come from."""

    @property
    def description(self) -> str:
        """One sentence for the page: what is counted, and since when."""
        ...

    def minutes(self, since: datetime, by: GroupBy) -> list[UsageMinute]:
        """Every minute from ``since`` on, grouped by deployment or by caller (``key1``…)."""
        ...


class StoreUsage:
    """The usage accounting's per-minute rows in the store (:mod:`cerulean.services.usage`)."""

    def __init__(self, store: Store, *, recording: bool, retention_days: float) -> None:
        self._store = store
        self._recording = recording
        self._retention_days = retention_days

    @property
    def description(self) -> str:
        if not self._recording:
            return (
                "Usage accounting is off on this server (CERULEAN_USAGE_ACCOUNTING=false): "
                "these are the minutes recorded before, if any."
            )
        return (
            "Every data-plane request, recorded per minute in the store by usage accounting "
            f"(written about once a second, kept {self._retention_days:g} days; the same "
            "figures as cerulean usage). The playground's requests count as caller 'studio'."
        )

    def minutes(self, since: datetime, by: GroupBy) -> list[UsageMinute]:
        out = []
        for row in self._store.usage(since):
            name = row.deployment if by == "deployment" else (row.caller or "unknown")
            out.append(
                UsageMinute(
                    row.minute,
                    name,
                    row.requests,
                    row.prompt_tokens,
                    row.completion_tokens,
                    row.requests if row.status >= 400 else 0,
                    row.duration_sum * 1000,
                )
            )
        return out


@dataclass(frozen=True)
class Range:
    """A chart's time range: ``buckets`` of ``step`` ending now."""

    name: str
    label: str
    step: timedelta
    buckets: int


RANGES = {
    "hour": Range("hour", "Last hour (per minute)", timedelta(minutes=1), 60),
    "day": Range("day", "Last day (per 30 minutes)", timedelta(minutes=30), 48),
    "week": Range("week", "Last week (per 6 hours)", timedelta(hours=6), 28),
}
METRICS = {
    "requests": "Requests",
    "prompt_tokens": "Prompt tokens",
    "completion_tokens": "Completion tokens",
    "errors": "Errors (status 400 and above)",
    "latency_ms": "Mean latency (ms)",
}
_COLORS = ("#0a5cad", "#b3261e", "#1b7d3a", "#7a4ea3", "#a35a00", "#00707a", "#5c5c5c")


@dataclass(frozen=True)
class Chart:
    """One metric over the range: per series, one value per bucket."""

    metric: str
    title: str
    starts: list[datetime]
    series: dict[str, list[float]]

    @property
    def total(self) -> float:
        if self.metric == "latency_ms":
            values = [v for vs in self.series.values() for v in vs if v]
            return sum(values) / len(values) if values else 0.0
        return sum(sum(vs) for vs in self.series.values())

    def svg(self) -> str:
        return render_svg(self)


def build_charts(
    source: UsageSource, range_name: str, by: GroupBy, now: datetime | None = None
) -> list[Chart]:
    """The five charts (requests, tokens, errors, latency) of ``range_name``."""
    span = RANGES[range_name]
    end = _floor(now or datetime.now(timezone.utc), span.step) + span.step
    first = end - span.step * span.buckets
    starts = [first + span.step * i for i in range(span.buckets)]
    sums: dict[str, dict[str, list[float]]] = {
        m: defaultdict(_zeros(span.buckets)) for m in METRICS
    }
    counts: dict[str, list[float]] = defaultdict(_zeros(span.buckets))
    for row in source.minutes(first, by):
        index = int((row.minute - first) / span.step)
        if not 0 <= index < span.buckets:
            continue
        sums["requests"][row.series][index] += row.requests
        sums["prompt_tokens"][row.series][index] += row.prompt_tokens
        sums["completion_tokens"][row.series][index] += row.completion_tokens
        sums["errors"][row.series][index] += row.errors
        sums["latency_ms"][row.series][index] += row.duration_ms
        counts[row.series][index] += row.requests
    for name, values in sums["latency_ms"].items():
        sums["latency_ms"][name] = [
            total / n if n else 0.0 for total, n in zip(values, counts[name], strict=True)
        ]
    return [
        Chart(metric, title, starts, dict(sorted(sums[metric].items())))
        for metric, title in METRICS.items()
    ]


def _zeros(n: int) -> Callable[[], list[float]]:
    return lambda: [0.0] * n


def _floor(at: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + ((at - epoch) // step) * step


_W, _H, _PAD_L, _PAD_B, _PAD_T = 640, 180, 56, 28, 12


def render_svg(chart: Chart) -> str:
    """The chart as an accessible inline SVG: bars stacked per series, a y-axis maximum and
    the first and last bucket's times; the page carries the same figures as a table."""
    n = len(chart.starts)
    stacked = [sum(vs[i] for vs in chart.series.values()) for i in range(n)]
    if chart.metric == "latency_ms":
        stacked = [max((vs[i] for vs in chart.series.values()), default=0) for i in range(n)]
    top = max(stacked, default=0) or 1
    width = (_W - _PAD_L - 8) / max(n, 1)
    plot_h = _H - _PAD_B - _PAD_T
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {_W} {_H}" width="100%" '
        f'aria-labelledby="t-{chart.metric}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{chart.metric}">{escape(chart.title)}: total {_fmt(chart.total)}</title>',
        f'<line x1="{_PAD_L}" y1="{_PAD_T + plot_h}" x2="{_W - 8}" y2="{_PAD_T + plot_h}" '
        'stroke="#444"/>',
        f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_PAD_T + plot_h}" stroke="#444"/>',
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 10}" text-anchor="end" font-size="11">'
        f"{_fmt(top)}</text>",
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    if chart.starts:
        parts.append(
            f'<text x="{_PAD_L}" y="{_H - 8}" font-size="11">'
            f"{chart.starts[0].strftime('%m-%d %H:%M')}</text>"
        )
        parts.append(
            f'<text x="{_W - 8}" y="{_H - 8}" text-anchor="end" font-size="11">'
            f"{chart.starts[-1].strftime('%m-%d %H:%M')} UTC</text>"
        )
    for i in range(n):
        base = 0.0
        for color, (name, values) in zip(
            _cycle(len(chart.series)), chart.series.items(), strict=True
        ):
            value = values[i]
            if value <= 0:
                continue
            if chart.metric == "latency_ms":
                height, y = value / top * plot_h, _PAD_T + plot_h - value / top * plot_h
            else:
                height = value / top * plot_h
                y = _PAD_T + plot_h - base - height
                base += height
            x = _PAD_L + i * width + 1
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 2, 1):.1f}" '
                f'height="{max(height, 1):.1f}" fill="{color}" class="bar" '
                f'data-series="{escape(name)}"><title>{escape(name)} '
                f"{chart.starts[i].strftime('%H:%M')}: {_fmt(value)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def colors(names: Iterable[str]) -> dict[str, str]:
    """Each series' color, as the charts draw it (for the legend)."""
    names = list(names)
    return dict(zip(names, _cycle(len(names)), strict=True))


def _cycle(n: int) -> Sequence[str]:
    return [_COLORS[i % len(_COLORS)] for i in range(n)]


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
