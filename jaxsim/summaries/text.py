"""The summary table as text: what the end of a sweep or an analysis and `jaxsim summary DIR`
print, and two sweeps side by side (`jaxsim summary DIR1 DIR2`)."""
from __future__ import annotations

import math

import pandas as pd

from jaxsim.summaries.table import columns_of

MAX_ROWS = 40     # rows printed; summary.csv holds every one


def decimals(x: float) -> int:
    """Decimal places that show 4 significant digits of `x` (none past 1000)."""
    if x is None or not math.isfinite(x) or x == 0:
        return 3
    return min(8, max(0, 3 - math.floor(math.log10(abs(x)))))


def number(x: float, places: int | None = None) -> str:
    """A number for reading: 4 significant digits (or `places` decimals), '-' when missing."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{decimals(x) if places is None else places}f}"


def cell(row: pd.Series, name: str) -> str:
    """'mean ± std' of a numeric column (the std to the mean's decimals; the mean alone with
    one run), 'name k/n' of a column of names (the most common and how many of the row's runs
    agree)."""
    if f"{name}_mean" in row.index:
        mean, std = float(row[f"{name}_mean"]), float(row[f"{name}_std"])
        if not math.isfinite(mean):
            return "-"
        if mean != 0 and not 1e-3 <= abs(mean) < 1e6:      # tiny or huge: scientific
            return f"{mean:.3e}" + (f" ± {std:.1e}" if math.isfinite(std) else "")
        places = decimals(mean)
        return number(mean, places) + (f" ± {std:.{places}f}" if math.isfinite(std) else "")
    top, share = row.get(name), row.get(f"{name}_share")
    if not isinstance(top, str):
        return "-"
    return f"{top} {round(share * row['runs'])}/{int(row['runs'])}"


def _grid(header: list[str], body: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; the first columns (axis values)
    right-aligned like the numbers."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *body]]


def _axis_text(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(table: pd.DataFrame, title: str) -> str:
    """The table under `title`: one line per axis value, a column per summary column."""
    axes, names = columns_of(table)
    show_diverged = bool(table["diverged"].sum())
    header = [*(axes or ["runs of"]), "runs", *(["diverged"] if show_diverged else []), *names]
    body = []
    for _, row in table.head(MAX_ROWS).iterrows():
        body.append([*([_axis_text(row[a]) for a in axes] or ["all"]), str(int(row["runs"])),
                     *([str(int(row["diverged"]))] if show_diverged else []),
                     *(cell(row, n) for n in names)])
    more = (f"\n({len(table) - MAX_ROWS} more rows in summary.csv)"
            if len(table) > MAX_ROWS else "")
    return "\n".join([title, *_grid(header, body)]) + more


def title(table: pd.DataFrame, where: str, what: str = "final results") -> str:
    """'<what> at step S per <axes> (mean ± std over seeds) <where>' (where: "-> FILE" for a
    table just written, "of DIR" for one read)."""
    axes, _ = columns_of(table)
    steps = sorted(set(int(s) for s in table["step"]))
    at = f"at step {steps[0]}" if len(steps) == 1 else "at each run's last step"
    per = f"per {' x '.join(axes)}" if axes else "over all runs"
    return f"jaxsim: {what} {at} {per} (mean ± std over seeds; diverged runs not in it) {where}"


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two summary tables side by side on their common axis keys (an outer join: a value only
    one sweep has shows '-' for the other): per summary column both, `<name>_mean_A` ...,
    and `<name>_diff` = B's mean - A's."""
    axes_a, names_a = columns_of(a)
    axes_b, names_b = columns_of(b)
    on = [k for k in axes_a if k in axes_b]
    if not on:
        a, b, on = a.assign(_all="all runs"), b.assign(_all="all runs"), ["_all"]
    both = a.merge(b, on=on, how="outer", suffixes=("_A", "_B"), sort=True)
    for name in names_a:
        if name in names_b and f"{name}_mean_A" in both and f"{name}_mean_B" in both:
            both[f"{name}_diff"] = both[f"{name}_mean_B"] - both[f"{name}_mean_A"]
    return both


def render_comparison(a: pd.DataFrame, b: pd.DataFrame, dir_a: str, dir_b: str) -> str:
    """A block per summary column the two sweeps share: A, B and B - A per axis value."""
    axes_a, names_a = columns_of(a)
    axes_b, names_b = columns_of(b)
    both = compare(a, b)
    on = [k for k in axes_a if k in axes_b] or ["_all"]
    lines = [f"jaxsim: A = {dir_a} (step {_steps(a)}), B = {dir_b} (step {_steps(b)}); "
             f"mean ± std over seeds per {' x '.join(k for k in on if k != '_all') or 'sweep'}"]
    only = sorted(set(names_a) ^ set(names_b))
    for name in [n for n in names_a if n in names_b]:
        body = []
        for _, row in both.iterrows():
            cells = [_side(row, name, "_A"), _side(row, name, "_B")]
            cells.append(_difference(row, name))
            body.append([*(_axis_text(row[k]) for k in on), *cells])
        lines += ["", *_grid([*(k if k != "_all" else "runs of" for k in on),
                              f"{name} A", f"{name} B", "B - A"], body)]
    if only:
        lines += ["", f"in one sweep only: {', '.join(only)}"]
    return "\n".join(lines)


def _difference(row: pd.Series, name: str) -> str:
    """B's mean - A's, to A's decimals; for names, whether the most common agree."""
    diff = row.get(f"{name}_diff")
    if isinstance(diff, float) and math.isfinite(diff):
        return f"{diff:+.{decimals(row[f'{name}_mean_A'])}f}"
    a, b = row.get(f"{name}_A"), row.get(f"{name}_B")
    if isinstance(a, str) and isinstance(b, str):
        return "same" if a == b else "differs"
    return "-"


def _side(row: pd.Series, name: str, suffix: str) -> str:
    """One sweep's cell of a joined row (its columns carry `suffix`)."""
    runs = row.get(f"runs{suffix}")
    if runs is None or (isinstance(runs, float) and not math.isfinite(runs)):
        return "-"
    own = {k[:-len(suffix)]: v for k, v in row.items() if isinstance(k, str) and k.endswith(suffix)}
    own["runs"] = int(runs)
    return cell(pd.Series(own), name)


def _steps(table: pd.DataFrame) -> str:
    steps = sorted(set(int(s) for s in table["step"].dropna()))
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}..{steps[-1]}"
