"""Charts drawn on the server as inline SVG: no chart library, no script, no CDN.

Each chart is a stack of bars per day. Colours come from CSS classes (``series-<key>``) in
``dashboard.css``, so the SVG carries no inline style and passes the page's strict
Content-Security-Policy. Every bar has a ``<title>`` (a tooltip, and text for screen
readers); the legend is HTML next to the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from pesa._exceptions import ValidationError

__all__ = ["Series", "stacked_bars"]

_WIDTH = 640
_HEIGHT = 220
_LEFT = 44  # room for the y-axis labels
_BOTTOM = 24  # room for the x-axis labels
_TOP = 8


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked layer: a CSS key (``series-<key>``), a label and a value per bar."""

    key: str
    label: str
    values: Sequence[int]


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (and ≥ 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """A stacked bar chart as an ``<svg>`` element.

    Args:
        title: the chart's accessible name.
        labels: one label per bar (a day, ``"29 Nov"``).
        series: the layers, bottom first; each has one value per label.

    Raises:
        ValidationError: a series whose length differs from ``labels``, or a negative value.
    """
    for layer in series:
        if len(layer.values) != len(labels):
            raise ValidationError(
                f"series {layer.key!r}",
                f"must have one value per label ({len(labels)} values)",
                f"{len(layer.values)} values",
            )
        if any(v < 0 for v in layer.values):
            raise ValidationError(f"series {layer.key!r}", "must not have a negative value")
    totals = [sum(layer.values[i] for layer in series) for i in range(len(labels))]
    top = _nice_ceiling(max(totals, default=0))
    plot_w = _WIDTH - _LEFT - 4
    plot_h = _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(labels), 1)
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    ticks = (0, top // 2, top) if top % 2 == 0 and top > 1 else (0, top)
    for tick in ticks:
        y = _TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    every = max(1, round(len(labels) / 7))  # at most about seven x labels fit a phone
    for i, label in enumerate(labels):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        y = _TOP + plot_h
        for layer in series:
            value = layer.values[i]
            if value == 0:
                continue
            height = plot_h * value / top
            y -= height
            parts.append(
                f'<rect class="series-{escape(layer.key)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{height:.1f}">'
                f"<title>{escape(label)}: {value} {escape(layer.label)}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{_HEIGHT - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
