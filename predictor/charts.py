"""Pictures for the admin drawn as inline SVG on the server: training curves and confusion matrices.

Plain functions from numbers to markup, so the serving install needs no plotting library and the
page no script. Every piece of text goes through format_html, so names and titles are escaped.
"""

import math
from collections.abc import Mapping, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

# Colours that read on the admin's light and dark themes alike; each series also has its own dash
# pattern, so the lines stay apart without colour.
SERIES_STYLES = (("#2f7ed8", ""), ("#d9622b", "6 4"), ("#3a9a5b", "2 3"), ("#8e5bb5", "8 3 2 3"))
CORRECT_COLOUR = "#2e86c1"
MISTAKE_COLOUR = "#c0392b"
# Above this fill opacity a cell is dark enough for white numbers.
DARK_CELL = 0.55


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    percent: bool = False,
    mark: int | None = None,
    mark_label: str = "",
    width: int = 360,
    height: int = 220,
) -> SafeString:
    """Return an SVG line chart of `series` (name -> one value per epoch), with its own text description.

    Missing or non-finite values leave a gap. `percent` shows shares (0..1) as percentages; `mark`
    draws a dashed line at that (1-based) epoch, labelled `mark_label`. Raises ValueError without data.
    """
    lines = {
        str(name): [_finite(value) for value in values] if isinstance(values, (list, tuple)) else []
        for name, values in series.items()
    }
    values = [value for points in lines.values() for value in points if value is not None]
    if not values:
        raise ValueError("nothing to draw")
    epochs = max(len(points) for points in lines.values())
    low, high, step = _nice_range(min(values), max(values))
    left, right, top, bottom = 52, width - 12, 40, height - 34

    def x(epoch: float) -> float:
        return left + (right - left) * ((epoch - 1) / (epochs - 1) if epochs > 1 else 0.5)

    def y(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    def show(value: float) -> str:
        return f"{value:.1%}" if percent else f"{value:.4g}"

    ticks = [low + i * step for i in range(round((high - low) / step) + 1)]
    decimals = max(0, -math.floor(math.log10(step * (100 if percent else 1)) + 1e-9))
    tick_text = (lambda v: f"{v * 100:.{decimals}f}%") if percent else (lambda v: f"{v:.{decimals}f}")
    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.15"/>'
        '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
        ((left, right, _px(y(t)), _px(y(t)), left - 6, _px(y(t)), tick_text(t)) for t in ticks),
    )
    every = max(1, math.ceil(epochs / 12))
    epoch_ticks = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (_px(x(epoch)), bottom + 16, epoch)
            for epoch in range(1, epochs + 1)
            if (epoch - 1) % every == 0 or epoch == epochs
        ),
    )
    drawn = []
    for (name, points), (colour, dash) in zip(lines.items(), _cycle(SERIES_STYLES, len(lines))):
        for segment in _segments(points):
            path = " ".join(f"{_px(x(epoch))},{_px(y(value))}" for epoch, value in segment)
            drawn.append(
                format_html(
                    '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>',
                    path,
                    colour,
                    dash or "none",
                )
            )
        drawn.append(
            format_html_join(
                "",
                '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{}</title></circle>',
                (
                    (_px(x(epoch)), _px(y(value)), colour, _describe_point(name, epoch, show(value)))
                    for epoch, value in enumerate(points, start=1)
                    if value is not None
                ),
            )
        )
    keys, start = [], left
    for name, (colour, dash) in zip(lines, _cycle(SERIES_STYLES, len(lines))):
        keys.append((start, start + 22, colour, dash or "none", start + 27, name))
        start += 45 + 7 * len(name)  # room for the sample line and the name at this font size
    legend = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="12" y2="12" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>'
        '<text x="{}" y="12" dominant-baseline="middle">{}</text>',
        keys,
    )
    marker = ""
    if mark is not None and 1 <= mark <= epochs:
        # The label goes on the side of the line with more room.
        on_left = x(mark) > (left + right) / 2
        marker = format_html(
            '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="currentColor" stroke-opacity="0.6" '
            'stroke-dasharray="3 3"/><text x="{3}" y="{4}" text-anchor="{5}">{6}</text>',
            _px(x(mark)),
            top,
            bottom,
            _px(x(mark) - 4 if on_left else x(mark) + 4),
            top - 6,
            "end" if on_left else "start",
            mark_label,
        )
    summary = "; ".join(_describe(name, points, show) for name, points in lines.items())
    body = format_html(
        '{}{}{}{}{}<text x="{}" y="{}" text-anchor="middle">{}</text>',
        grid,
        epoch_ticks,
        marker,
        mark_safe("".join(drawn)),
        legend,
        _px((left + right) / 2),
        height - 4,
        _("epoch"),
    )
    return _svg(title=title, summary=summary, width=width, height=height, body=body)


def confusion_matrix_chart(
    matrix: Sequence[Sequence[int]], *, title: str, rows: str = "", columns: str = ""
) -> SafeString:
    """Return an SVG heat map of a square confusion matrix (rows: true class, columns: prediction).

    The diagonal is blue by each row's share read right; mistakes are red by their count against the
    largest mistake, so a single confusion in thousands still shows. Raises ValueError unless square.
    """
    rows, columns = rows or _("true digit"), columns or _("read as")
    counts = [[_count(cell) for cell in row] for row in matrix]
    size = len(counts)
    if size == 0 or any(len(row) != size for row in counts):
        raise ValueError("a confusion matrix is square")
    cell, left, top = 32, 40, 40
    width, height = left + size * cell + 8, top + size * cell + 8
    worst = max((counts[t][p] for t in range(size) for p in range(size) if t != p), default=0)
    cells = []
    for true, row in enumerate(counts):
        total = sum(row)
        for predicted, count in enumerate(row):
            if true == predicted:
                colour, opacity = CORRECT_COLOUR, count / total if total else 0.0
            else:
                colour, opacity = MISTAKE_COLOUR, 0.15 + 0.85 * count / worst if count else 0.0
            cx, cy = left + predicted * cell, top + true * cell
            text = ""
            if count:
                text = format_html(
                    '<text x="{}" y="{}" text-anchor="middle" dominant-baseline="central" font-size="10"{}>{}</text>',
                    cx + cell // 2,
                    cy + cell // 2,
                    mark_safe(' fill="#fff"') if opacity > DARK_CELL else "",
                    count,
                )
            cells.append(
                format_html(
                    '<g><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}" '
                    'stroke="currentColor" stroke-opacity="0.15"/>{}</g>',
                    f"{rows} {true}, {columns} {predicted}: {count}",
                    cx,
                    cy,
                    cell,
                    cell,
                    colour,
                    f"{opacity:.2f}",
                    text,
                )
            )
    axis = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" dominant-baseline="central">{}</text>'
        '<text x="{}" y="{}" text-anchor="middle" dominant-baseline="central">{}</text>',
        ((left + i * cell + cell // 2, top - 10, i, left - 12, top + i * cell + cell // 2, i) for i in range(size)),
    )
    right = sum(counts[i][i] for i in range(size))
    total = sum(map(sum, counts))
    mistakes = sorted(
        ((counts[t][p], t, p) for t in range(size) for p in range(size) if t != p and counts[t][p]), reverse=True
    )
    summary = _("%(right)d of %(total)d right") % {"right": right, "total": total}
    if total:
        summary += f" ({right / total:.2%})"
    if mistakes:
        frequent = ", ".join(
            _("%(true)d read as %(predicted)d (%(count)d)") % {"true": t, "predicted": p, "count": n}
            for n, t, p in mistakes[:3]
        )
        summary += "; " + _("most frequent mistakes: %(mistakes)s") % {"mistakes": frequent}
    body = format_html(
        '<text x="{}" y="12" text-anchor="middle">{}</text>'
        '<text transform="translate(12 {}) rotate(-90)" text-anchor="middle">{}</text>{}{}',
        left + size * cell // 2,
        columns,
        top + size * cell // 2,
        rows,
        axis,
        mark_safe("".join(cells)),
    )
    return _svg(title=title, summary=summary, width=width, height=height, body=body)


def _svg(*, title: str, summary: str, width: int, height: int, body: str) -> SafeString:
    """Return an SVG picture of `body`, named by its title and described in words for screen readers."""
    return format_html(
        '<svg class="chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
        'font-size="11" fill="currentColor"><title>{}</title>{}</svg>',
        f"{title}. {summary}.",
        width,
        height,
        width,
        height,
        title,
        body,
    )


def _px(value: float) -> str:
    """Return a coordinate with one decimal, as SVG attributes want it."""
    return f"{value:.1f}"


def _finite(value) -> float | None:
    """Return `value` as a float, or None if it is missing, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value) -> int:
    """Return a confusion-matrix cell as a non-negative int; raises ValueError for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return int(value)


def _nice_range(low: float, high: float) -> tuple[float, float, float]:
    """Return (bottom, top, step) of a y axis with round ticks that holds every value from `low` to `high`."""
    if high - low < 1e-12:
        low, high = low - (abs(low) * 0.05 or 0.5), high + (abs(high) * 0.05 or 0.5)
    rough = (high - low) / 4
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _segments(points: list[float | None]) -> list[list[tuple[int, float]]]:
    """Return the runs of consecutive known values as [(epoch, value), ...] lists (epochs from 1)."""
    runs: list[list[tuple[int, float]]] = []
    run: list[tuple[int, float]] = []
    for epoch, value in enumerate(points, start=1):
        if value is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append((epoch, value))
    return [*runs, run] if run else runs


def _cycle(styles: tuple, count: int) -> list:
    """Return `count` styles, starting again from the first when they run out."""
    return [styles[i % len(styles)] for i in range(count)]


def _describe_point(name: str, epoch: int, value: str) -> str:
    """Return the tooltip of one point: series, epoch and value."""
    return _("%(name)s, epoch %(epoch)d: %(value)s") % {"name": name, "epoch": epoch, "value": value}


def _describe(name: str, points: list[float | None], show) -> str:
    """Return one series in words: its first and last known values and their epochs."""
    known = [(epoch, value) for epoch, value in enumerate(points, start=1) if value is not None]
    if not known:
        return _("%(name)s: no values") % {"name": name}
    (first_epoch, first), (last_epoch, last) = known[0], known[-1]
    return _("%(name)s from %(first)s at epoch %(first_epoch)d to %(last)s at epoch %(last_epoch)d") % {
        "name": name,
        "first": show(first),
        "first_epoch": first_epoch,
        "last": show(last),
        "last_epoch": last_epoch,
    }
