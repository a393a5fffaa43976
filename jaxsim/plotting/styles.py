"""Telling runs apart in a figure, and saying which run a panel shows.

Every swept axis gets its own visual channel — colour for the leading axis, line style for the
second, marker for the third — and the key lists each channel's values under the axis's name,
so no two runs that differ in an axis look alike (seeds, which are replicas, share a style).
Keys sit outside the axes (`outside`), never on the data; `run_title` names a run by its axis
values rather than by its id alone.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxsim.plotting import axis_values, label

LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
NEUTRAL = "0.35"


class RunStyles(NamedTuple):
    """Per run (runs.csv order) the plot keywords of its line; the key's handles; the axes that
    are drawn alike (beyond the third: named in the key)."""
    styles: list[dict]
    handles: list
    alike: list[str]


def colours(count: int, cmap: str = "viridis"):
    """`count` colours of an ordered map (the leading axis's values are usually numbers)."""
    import matplotlib.pyplot as plt
    return plt.get_cmap(cmap)(np.linspace(0, 0.9, max(count, 1)))


def _header(text: str):
    from matplotlib.lines import Line2D
    return Line2D([], [], color="none", label=text)


def run_styles(rows: list[dict], axes: list[str], labels: dict | None = None,
               cmap: str = "viridis", channels: tuple = ("color", "ls", "marker")) -> RunStyles:
    """Colour = axes[0], line style = axes[1], marker = axes[2] (a marker on every few
    points), or the axes on the given `channels` in order (a figure whose colour already
    means something passes ("ls", "marker")); the key: each axis's name, then one entry per
    value."""
    from matplotlib.lines import Line2D
    styles = [{"color": colours(1, cmap)[0], "ls": "-"} for _ in rows]
    handles = []
    options_of = {"color": None, "ls": LINESTYLES, "marker": MARKERS}
    for axis, channel in zip(axes, channels):
        options = options_of[channel]
        names, index = axis_values(rows, axis)
        palette = colours(len(names), cmap) if channel == "color" else options
        handles.append(_header(label(axis, labels)))
        for i, name in enumerate(names):
            value = palette[i % len(palette)]
            for r in np.flatnonzero(index == i):
                styles[r][channel] = value
            look = {"color": value} if channel == "color" else {"color": NEUTRAL, channel: value}
            handles.append(Line2D([], [], lw=1.6, label=f"  {name}", **look))
    if "marker" in channels[:len(axes)]:
        for s in styles:
            s["markevery"], s["ms"] = 0.1, 4
    alike = list(axes[len(channels):])
    if alike:
        handles.append(_header(f"drawn alike: {', '.join(label(a, labels) for a in alike)}"))
    return RunStyles(styles, handles, alike)


def outside(ax, handles: list | None = None, title: str | None = None, **kwargs):
    """The axes' legend to their right, off the data (the figure is saved to fit it)."""
    options = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                   fontsize=7, title_fontsize=7, frameon=False)
    options.update(kwargs)
    if handles is None:
        return ax.legend(title=title, **options)
    return ax.legend(handles=handles, title=title, **options)


def run_title(row: dict, axes: list[str], labels: dict | None = None) -> str:
    """'run 3: mask probability = 0.2, learning rate = 0.001, seed 1'."""
    from jaxsim.plotting import fmt
    values = []
    for a in axes:
        try:
            values.append(f"{label(a, labels)} = {fmt(float(row[a]))}")
        except (ValueError, TypeError):
            values.append(f"{label(a, labels)} = {row[a]}")
    return f"run {row['run_id']}: " + ", ".join([*values, f"seed {row['seed']}"])


def wrap_title(title: str, width: int = 44) -> str:
    """A run title for a panel of a multi-panel figure: the run id on its own line, the axis
    values wrapped at `width` characters (long single lines ran into the next panel's title)."""
    import textwrap
    if len(title) <= width:
        return title
    head, sep, rest = title.partition(": ")
    return f"{head}:\n{textwrap.fill(rest, width)}" if sep else textwrap.fill(title, width)


def differs(values_R: np.ndarray, rtol: float = 1e-3) -> bool:
    """Whether per-run reference values (a baseline, an oracle) differ beyond `rtol`: then a
    single line for all runs would misplace some of them."""
    finite = np.asarray(values_R, float)
    finite = finite[np.isfinite(finite)]
    return finite.size > 1 and np.ptp(finite) > rtol * max(np.abs(finite).max(), 1e-12)


def row_mean(values_RxE: np.ndarray) -> np.ndarray:
    """[R] each run's mean over its evaluations (NaN, quietly, for a run with none finite)."""
    values = np.asarray(values_RxE, float)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=1)
    count = finite.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
