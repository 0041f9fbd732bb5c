"""Pictures for the admin drawn as inline SVG on the server: training curves, confusion matrices, accuracy by version.

Plain functions from numbers to markup, so the serving install needs no plotting library and the
page no script. Every piece of text goes through format_html, so names and titles are escaped.
"""

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

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
HELDOUT_COLOUR, LIVE_COLOUR = SERIES_STYLES[0][0], SERIES_STYLES[1][0]
# Width given to each version on the accuracy-by-version chart, and the narrowest that still has room
# for its name ("v20") under it: below that only every few versions are named.
VERSION_WIDTH, VERSION_LABEL_WIDTH = 44, 28


class VersionAccuracy(NamedTuple):
    """One version's column on the accuracy-by-version chart; each share is 0..1, or None if unknown."""

    name: str  # "v2"
    parent: str  # the version its retrain started from ("v1"), or "" for none
    before: float | None  # the parent on the drawings this version's retrain held out
    after: float | None  # this version on the same drawings
    live: float | None  # on the drawings it judged when served that reviewers have since labelled
    live_count: int = 0


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


def version_accuracy_chart(versions: Sequence[VersionAccuracy], *, title: str) -> SafeString:
    """Return an SVG chart of accuracy by version, oldest first, with its own text description.

    Each retrained version gets its held-out pair, its parent's accuracy (hollow circle) joined to its own
    (filled circle) on the drawings its retrain held out, and a square for its accuracy on the reviewed
    drawings it judged live. Raises ValueError when no version has any of them.
    """
    columns = [
        column._replace(before=_share(column.before), after=_share(column.after), live=_share(column.live))
        for column in versions
    ]
    values = [v for column in columns for v in (column.before, column.after, column.live) if v is not None]
    if not values:
        raise ValueError("nothing to draw")
    count = len(columns)
    width, height = min(880, max(520, 80 + VERSION_WIDTH * count)), 260
    left, right, top, bottom = 60, width - 12, 40, height - 40
    low, high, step = _nice_range(min(values), max(values))
    low, high = max(low, 0.0), min(high, 1.0)  # accuracy never leaves 0%..100%, nor does its axis
    step_width = (right - left) / count

    def x(index: int) -> float:
        return left + step_width * (index + 0.5)

    def y(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    ticks = [low + i * step for i in range(round((high - low) / step) + 1)]
    decimals = max(0, -math.floor(math.log10(step * 100) + 1e-9))
    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.15"/>'
        '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
        ((left, right, _px(y(t)), _px(y(t)), left - 6, _px(y(t)), f"{t * 100:.{decimals}f}%") for t in ticks),
    )
    every = max(1, math.ceil(VERSION_LABEL_WIDTH / step_width))
    names = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (_px(x(i)), bottom + 16, column.name)
            for i, column in enumerate(columns)
            if (count - 1 - i) % every == 0  # the newest version is always named
        ),
    )
    marks = []
    for i, column in enumerate(columns):
        held_x, live_x = x(i) - 5, x(i) + 6
        pair = [value for value in (column.before, column.after) if value is not None]
        if len(pair) == 2:
            marks.append(
                format_html(
                    '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="{3}" stroke-width="2"/>',
                    _px(held_x),
                    _px(y(pair[0])),
                    _px(y(pair[1])),
                    HELDOUT_COLOUR,
                )
            )
        if column.before is not None:
            marks.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="4" fill="none" stroke="{}" stroke-width="2"><title>{}</title></circle>',
                    _px(held_x),
                    _px(y(column.before)),
                    HELDOUT_COLOUR,
                    _("%(parent)s on the drawings held out from %(version)s: %(value)s")
                    % {"parent": column.parent or "?", "version": column.name, "value": f"{column.before:.1%}"},
                )
            )
        if column.after is not None:
            marks.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="4" fill="{}"><title>{}</title></circle>',
                    _px(held_x),
                    _px(y(column.after)),
                    HELDOUT_COLOUR,
                    _("%(version)s on the drawings held out from it: %(value)s")
                    % {"version": column.name, "value": f"{column.after:.1%}"},
                )
            )
        if column.live is not None:
            marks.append(
                format_html(
                    '<rect x="{}" y="{}" width="7" height="7" fill="{}"><title>{}</title></rect>',
                    _px(live_x - 3.5),
                    _px(y(column.live) - 3.5),
                    LIVE_COLOUR,
                    _describe_live(column),
                )
            )
    legend, start = [], left
    for sample, name in (
        (
            format_html('<circle cx="4" r="4" fill="none" stroke="{}" stroke-width="2"/>', HELDOUT_COLOUR),
            _("parent, held out"),
        ),
        (format_html('<circle cx="4" r="4" fill="{}"/>', HELDOUT_COLOUR), _("version, held out")),
        (format_html('<rect x="0.5" y="-3.5" width="7" height="7" fill="{}"/>', LIVE_COLOUR), _("version, live")),
    ):
        legend.append(
            format_html(
                '<g transform="translate({} 12)">{}<text x="12" dominant-baseline="middle">{}</text></g>',
                start,
                sample,
                name,
            )
        )
        start += 32 + 7 * len(name)  # room for the sample and the name at this font size
    body = format_html(
        '{}{}{}{}<text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>'
        '<text x="{}" y="{}" text-anchor="middle">{}</text>',
        grid,
        names,
        mark_safe("".join(marks)),
        mark_safe("".join(legend)),
        _px((top + bottom) / 2),
        _("accuracy (%)"),
        _px((left + right) / 2),
        height - 6,
        _("model version"),
    )
    summary = "; ".join(_describe_version(column) for column in columns)
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


def _share(value) -> float | None:
    """Return `value` as a share from 0 to 1, or None if it is anything else."""
    value = _finite(value)
    return value if value is not None and 0 <= value <= 1 else None


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
    # The margin keeps a value on a tick (0.7 is 6.999... steps of 0.1) from adding a tick below or above it.
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, step


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


def _describe_live(column: VersionAccuracy) -> str:
    """Return a version's live accuracy in words, with the number of reviewed drawings behind it."""
    return _("%(version)s live: %(value)s of %(count)d reviewed drawings read right") % {
        "version": column.name,
        "value": f"{column.live:.1%}",
        "count": column.live_count,
    }


def _describe_version(column: VersionAccuracy) -> str:
    """Return one version's column in words: held-out accuracy before and after, and live accuracy."""
    parts = []
    if column.before is not None or column.after is not None:
        show = {"before": "?" if column.before is None else f"{column.before:.1%}"}
        show["after"] = "?" if column.after is None else f"{column.after:.1%}"
        parts.append(_("held out %(before)s (%(parent)s) to %(after)s") % {**show, "parent": column.parent or "?"})
    if column.live is not None:
        parts.append(_("live %(value)s") % {"value": f"{column.live:.1%}"})
    return f"{column.name}: {', '.join(parts) or _('nothing measured')}"
