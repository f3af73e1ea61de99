"""Tables and plots in the paper's layout: per-class tables of one trial, mean +- std over seeds of a
sweep, and the figures beside them. Pure pandas and matplotlib (Agg backend): usable on a headless
cluster and from the MLflow store alone."""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import pandas as pd


def per_class_table(metrics: dict[str, float], counts: Sequence[int], classes: Sequence[str]) -> pd.DataFrame:
    """One row per class: training count, final test accuracy, mean test margin."""
    return pd.DataFrame({
        "class": list(classes),
        "train_count": list(counts),
        "test_acc": [metrics.get(f"class_acc_{c}", math.nan) for c in range(len(counts))],
        "margin": [metrics.get(f"class_margin_{c}", math.nan) for c in range(len(counts))],
    })


def mean_std(means: Sequence[float], stds: Sequence[float], counts: Sequence[int], digits: int = 4) -> list[str]:
    """``"mean ± std"`` per group, or the mean alone where one trial makes the group: one seed has no
    spread to show, and ``± 0.0000`` would read as seeds that agree."""
    return [f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}" for m, s, n in zip(means, stds, counts)]


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table. Text columns print as written: tabulate would read a column of
    one-seed means ("0.9000") as numbers and drop the paper's trailing zeros."""
    text = [i for i, column in enumerate(frame.columns) if not pd.api.types.is_numeric_dtype(frame[column])]
    return frame.to_markdown(index=False, disable_numparse=text)


def summarise(trials: pd.DataFrame, by: Sequence[str], metrics: dict[str, str],
              digits: int | Mapping[str, int] = 4) -> pd.DataFrame:
    """Mean +- std over the trials of each group (seeds), one row per group, as in the paper's tables.

    ``metrics`` maps a trial-table column to its column title. The result has one formatted
    ``"mean +- std"`` column per metric (``mean_std``, to ``digits`` places: one number, or one per
    column, 4 where a column has none), plus ``<column>_mean``, ``<column>_std`` (0 for one trial, so
    error bars draw) and ``n`` numbers. Groups come in sorted order (a categorical's in its categories').
    """
    groups = trials.groupby(list(by), sort=True)
    table = groups.size().rename("n").to_frame()
    for column, title in metrics.items():
        stats = groups[column].agg(["mean", "std"])
        stats["std"] = stats["std"].fillna(0.0)
        table[f"{column}_mean"], table[f"{column}_std"] = stats["mean"], stats["std"]
        places = digits if isinstance(digits, int) else digits.get(column, 4)
        table[title] = mean_std(stats["mean"], stats["std"], table["n"], places)
    return table.reset_index()


def trend(trials: pd.DataFrame, x: str, metrics: Mapping[str, str], log2: bool = True,
          digits: int | Mapping[str, int] = 4, level: float = 0.95) -> pd.DataFrame:
    """Whether each metric moves with the hyperparameter ``x``, over the trials themselves (every seed of
    every setting, read as independent draws), one row per metric: the least-squares slope of the metric
    on log2(x) (a change per doubling: sensitivity grids such as Table 12's omegas are powers of two; per
    unit of ``x`` with ``log2`` off), its ``level`` confidence interval and two-sided p-value (Student's
    t with n - 2 degrees of freedom, ``scipy.stats.linregress``), and Spearman's rank correlation with
    its p-value. A table of means (``summarise``) says how far two settings lie apart against the
    seeds' spread; this says whether the metric follows the setting over the whole grid. Slopes and
    their bounds to ``digits`` places (as ``summarise``); "-" where fewer than three trials or a single
    value of ``x`` leave a number undefined."""
    from scipy import stats  # kept off the import path of Ray workers, which never print tables

    values = trials[x].astype(float)
    position = values.map(math.log2) if log2 else values
    fits = len(trials) >= 3 and position.nunique() >= 2
    quantile = stats.t.ppf((1 + level) / 2, len(trials) - 2) if fits else math.nan

    def text(value: float, places: str) -> str:
        return f"{value:{places}}" if math.isfinite(value) else "-"

    rows = []
    for column, title in metrics.items():
        places = f".{digits if isinstance(digits, int) else digits.get(column, 4)}f"
        fit = stats.linregress(position, trials[column]) if fits else None
        slope, error, p = (fit.slope, fit.stderr, fit.pvalue) if fit else (math.nan, math.nan, math.nan)
        rank = stats.spearmanr(position, trials[column]) if fits and trials[column].nunique() > 1 else None
        rho, p_rank = (rank.statistic, rank.pvalue) if rank else (math.nan, math.nan)
        half = quantile * error
        rows.append({
            "metric": title, "n": len(trials), "Slope per doubling" if log2 else "Slope": text(slope, places),
            f"{level:.0%} CI": f"{slope - half:{places}} to {slope + half:{places}}" if math.isfinite(half) else "-",
            "p (slope)": text(p, ".2g"), "Spearman rho": text(rho, ".3f"), "p (Spearman)": text(p_rank, ".2g"),
        })
    return pd.DataFrame(rows)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def margin_bar_chart(table: pd.DataFrame, title: str) -> bytes:
    """Per-class mean margin as bars, classes in training-count order (head to tail; SVHN's labels are
    not in that order)."""
    table = table.sort_values("train_count", ascending=False, kind="stable")
    fig, ax = _figure()
    ax.bar(table["class"].astype(str), table["margin"], color="tab:blue")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("class (head to tail)")
    ax.set_ylabel("mean test margin")
    ax.set_title(title)
    return _png(fig)


def sensitivity_plot(table: pd.DataFrame, x: str, y: str, ylabel: str, title: str, log_x: bool = True) -> bytes:
    """A metric's mean against a hyperparameter, with +- std error bars (paper Table 12 as a curve)."""
    fig, ax = _figure()
    ax.errorbar(table[x], table[f"{y}_mean"], yerr=table[f"{y}_std"], marker="o", capsize=3)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)


def scatter_plot(x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str) -> bytes:
    fig, ax = _figure()
    ax.scatter(x, y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)


def wide(summary: pd.DataFrame, rows: str, row_order: Sequence[str], cols: Sequence[str], value: str) -> pd.DataFrame:
    """The paper's layout: one row per ``rows`` value (in ``row_order``), one column per combination
    of ``cols`` (e.g. imbalance kind and ratio), cells taken from the ``value`` column."""
    frame = summary.copy()
    frame["_column"] = frame[list(cols)].astype(str).agg(" ".join, axis=1)
    table = frame.pivot(index=rows, columns="_column", values=value)
    order = [r for r in row_order if r in table.index]
    columns = list(dict.fromkeys(frame.sort_values(list(cols), ascending=[True] * len(cols))["_column"]))
    return table.loc[order, columns].reset_index().rename_axis(columns=None)
