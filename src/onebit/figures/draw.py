"""The figures of ``onebit.results``' numbers (``onebit.results.figures``: the same loader, cells and selection as
the tables), each as a matplotlib figure (``*_figure``) and saved as PNG (``plot_*``):

1. training curves per cell: mean over seeds per epoch with a band over seeds, small multiples beyond 8 cells;
2. ablation bars: the tables' cells (mean ± std over seeds, n below each bar) on a value axis around the data;
3. Bi-Real Table 1's conclusions: the paired differences, the conclusions table's noise band and the paper's
   difference.

Failed and running runs never enter a mean or a curve, but every figure counts them; legends sit outside the
axes; a line for stderr starts with ``plots:``."""

from __future__ import annotations

import itertools
import math
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from onebit.core.registry import BINARY, DEFAULT_METRIC, METRICS
from onebit.figures.common import PROG, axis_label, option_text, palette, plt, save_figure, slug, subtitle, value_limits
from onebit.records.record import RunRecord
from onebit.results.cells import group_cells
from onebit.results.figures import (
    AS_TABLES,
    CURVE_METRICS,
    FINAL,
    CellCurves,
    ablation_data,
    check_stage,
    curve_data,
    figure_items,
    figure_label_keys,
    format_counts,
    stage_records,
)

BAND_LABEL = {"minmax": "shaded: min-max over seeds", "std": "shaded: mean ± 1 std over seeds (ddof=1)"}
MAX_LINES_PER_PANEL = 8


# ----------------------------------------------------------------------------------------------------------
# 1. Training curves
# ----------------------------------------------------------------------------------------------------------

def choose_facet(cells: Sequence[dict], max_lines: int = MAX_LINES_PER_PANEL) -> str | None:
    """With more than ``max_lines`` cells, the option to split panels by (small multiples): the varying
    option, in label order, that leaves the fewest lines per panel (first one reaching ``max_lines`` wins)."""
    if len(cells) <= max_lines:
        return None
    best, best_lines = None, len(cells)
    for k in figure_label_keys(cells) or []:
        values = Counter(option_text(c.get(k)) for c in cells)
        if len(values) < 2:
            continue
        lines = max(values.values())
        if lines < best_lines:
            best, best_lines = k, lines
        if lines <= max_lines:
            return k
    return best


def _cell_count(cell: CellCurves) -> str:
    """``n=3/4, 1 failed``: seeds averaged / runs in the cell, and the runs that are not finished."""
    bad = "".join(f", {n} {s}" for s, n in sorted(cell.counts.items()) if s != "finished")
    return f"n={cell.n}/{cell.runs}{bad}"


def plot_curves(records: Sequence[RunRecord], path: Path | str, stage: str = BINARY, **kw) -> Path:
    """:func:`curves_figure` saved as PNG at ``path``."""
    return save_figure(curves_figure(records, stage, **kw), path)


def curves_figure(records: Sequence[RunRecord], stage: str = BINARY, metrics: Sequence[str] = CURVE_METRICS,
                  band: str = "minmax", scope: str | None = None, facet: str | None = "auto",
                  notes: Sequence[str] = ()):
    """Training curves per cell: the mean over seeds per epoch of ``val/top1`` (top) and ``train/loss``
    (bottom) of one stage, with a shaded band over seeds, one line per cell; from each run's recorded history
    (``stages[stage].history``, one entry per epoch; the ``pretrain`` history of a cache hit is the cached
    twin's). Not a figure of the papers: it shows how each ablation cell of Bi-Real Table 1 (section 4.2)
    trains. With more than 8 cells the panels are split by one option (columns, small multiples) and the
    legend sits outside the axes. ``scope`` (the study) and ``notes`` (what was left out) go into the title."""
    check_stage(records, stage)
    recs = stage_records(records, stage)
    items = [figure_items(rs) for rs in group_cells(recs).values()]
    facet = choose_facet(items) if facet == "auto" else facet
    data = curve_data(recs, stage, metrics, band, exclude_label=[facet] if facet else [])
    facet_values = sorted({option_text(c.items.get(facet)) for c in data}) if facet else [None]
    labels = list(dict.fromkeys(c.label for c in data))
    colors = dict(zip(labels, palette(len(labels))))
    ncols = len(facet_values)
    fig, axes = plt.subplots(len(metrics), ncols, figsize=(4.6 * ncols + 1.0, 3.1 * len(metrics)), squeeze=False,
                             sharex=True, sharey="row")
    handles = {}
    for j, fv in enumerate(facet_values):
        for cell in data:
            if facet and option_text(cell.items.get(facet)) != fv:
                continue
            legend = f"{cell.label}  ({_cell_count(cell)})"
            for i, m in enumerate(metrics):
                ax = axes[i][j]
                s = cell.series.get(m)
                scale = 100.0 if m in METRICS else 1.0
                if s is None or s.empty:
                    h, = ax.plot([], [], color=colors[cell.label], ls=":")
                else:
                    h, = ax.plot(s.index, s["mean"] * scale, color=colors[cell.label], lw=1.4,
                                 marker="o" if len(s) < 3 else None, ms=3)
                    ax.fill_between(s.index, s["lo"] * scale, s["hi"] * scale, color=colors[cell.label],
                                    alpha=0.18, lw=0)
                handles.setdefault(legend if not facet else cell.label, h)
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(axis_label(m))
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if facet and i == 0:
                sub = [c for c in data if option_text(c.items.get(facet)) == fv]
                runs = Counter()
                for c in sub:
                    runs.update(c.counts)
                ax.set_title(f"{facet}={fv}\n{format_counts(runs)}", fontsize=9)
    if facet:  # one legend entry per label across panels: its usual count, and the panels that differ
        named = {}
        for label in handles:
            per = Counter()
            cells = [c for c in data if c.label == label]
            for c in cells:
                per[_cell_count(c)] += 1
            usual = per.most_common(1)[0][0]
            odd = [f"{c.items.get(facet)}: {_cell_count(c)}" for c in cells if _cell_count(c) != usual]
            named[f"{label}  ({usual}{'; ' + '; '.join(odd) if odd else ''})"] = handles[label]
            for c in cells:
                if any(s != "finished" for s in c.counts):
                    print(f"{PROG}: curves: {facet}={c.items.get(facet)}, {label}: {_cell_count(c)} "
                          "(unfinished runs excluded)", file=sys.stderr)
        handles = named
    band_handle = plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.3)
    legend_labels = [*handles, BAND_LABEL[band], "n = seeds averaged / runs in cell"
                     + ("" if not facet else f" (in every panel, unless a {facet} is named)")]
    legend_handles = [*handles.values(), band_handle, plt.Line2D([], [], ls="none")]
    fig.legend(legend_handles, legend_labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    total = Counter()
    for c in data:
        total.update(c.counts)
    title = (f"Training curves, stage {stage!r}{f', {scope}' if scope else ''}: {len(data)} cells, "
             f"{format_counts(total)} (only finished runs averaged; {AS_TABLES})")
    fig.suptitle(title + subtitle(recs, notes), fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# 2. Ablation bars
# ----------------------------------------------------------------------------------------------------------

def bar_label(label: str, cell_text: str, width: int = 16) -> str:
    """A bar's x label: one ``key=value`` of the cell's label per line (split after ``=`` when longer than
    ``width``), then its cell text."""
    lines = []
    for item in filter(None, str(label).split(", ")):
        key, eq, value = item.partition("=")
        lines += [key + eq, value] if len(item) > width and eq else [item]
    return "\n".join([*lines, cell_text])


def fit_tick_labels(fig, ax, pad_px: float = 6.0) -> None:
    """Widen ``fig`` so that no two neighbouring x tick labels of ``ax`` overlap: the labels are measured once (one
    draw); the worst neighbouring pair needs (half widths of both + ``pad_px``) / (distance of their ticks in data
    units) pixels per data unit, and the axes grow to that (the labels' size does not depend on the figure's)."""
    fig.canvas.draw()
    ticks = [(x, t.get_window_extent().width) for x, t in zip(ax.get_xticks(), ax.get_xticklabels()) if t.get_text()]
    need = max(((wa + wb) / 2 + pad_px) / (xb - xa) for (xa, wa), (xb, wb) in itertools.pairwise(ticks)) \
        if len(ticks) > 1 else 0.0
    lo, hi = ax.get_xlim()
    grow = (need * (hi - lo) - ax.get_window_extent().width) / fig.dpi
    if grow > 0:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + grow, h)
        fig.tight_layout()


def plot_ablation(records: Sequence[RunRecord], path: Path | str, stage: str = FINAL, **kw) -> Path:
    """:func:`ablation_figure` saved as PNG at ``path``."""
    return save_figure(ablation_figure(records, stage, **kw), path)


def ablation_figure(records: Sequence[RunRecord], stage: str = FINAL, metric: str = DEFAULT_METRIC,
                    by: str = "structure", color: str = "sign", scope: str | None = None, notes: Sequence[str] = ()):
    """Bar chart of a final metric per cell (default: ``test/top1`` of each run's final stage, the tables' cell),
    the mean over seeds with ±1 std error bars (ddof=1): the tables' numbers, from the same
    ``onebit.results.cells.CellSummary`` (``ablation_data``); the individual seeds as dots; below each bar its
    label and the tables' cell text (mean ± std (n=finished seeds), failed / running counted). The value axis
    spans the data with a margin (:func:`value_limits`; the axis label says where it starts when not at 0), the
    legend sits outside the axes, the x labels are wrapped and never overlap (:func:`fit_tick_labels`). Bars
    grouped by ``by`` (default ``structure``, the columns of Bi-Real Table 1, section 4.2) and coloured by
    ``color`` (default ``sign``: STE vs. ApproxSign)."""
    df = ablation_data(records, stage, metric, by, color)
    groups = list(dict.fromkeys(df[by].map(str)))
    color_values = list(dict.fromkeys(df[color].map(str).sort_values()))
    shade = dict(zip(color_values, palette(len(color_values))))
    x, centers, pos = [], [], 0.0
    for g in groups:
        n = int((df[by].map(str) == g).sum())
        x.extend(pos + np.arange(n))
        centers.append(pos + (n - 1) / 2)
        pos += n + 1
    x = np.asarray(x, dtype=float)
    labels = [bar_label(row.label, row.cell.text().replace(", ", "\n")) for row in df.itertuples()]
    fig, ax = plt.subplots(figsize=(6.0, 5.6))
    means = np.array([c.mean for c in df["cell"]])
    stds = np.array([c.std for c in df["cell"]])
    colors = [shade[str(v)] for v in df[color]]
    ax.bar(x, np.nan_to_num(means), width=0.8, color=colors, edgecolor="black", lw=0.5)
    has = ~np.isnan(stds)
    ax.errorbar(x[has], means[has], yerr=stds[has], fmt="none", ecolor="black", capsize=4, lw=1.2,
                gid="seed-std", zorder=4)
    dots = [(xi + o, v) for xi, c in zip(x, df["cell"])
            for o, v in zip(np.linspace(-0.18, 0.18, c.n) if c.n > 1 else [0.0], c.values)]
    if dots:
        ax.scatter(*zip(*dots), s=10, color="black", zorder=5, gid="seeds")
    drawn = [v for _, v in dots] + list(means[has] - stds[has]) + list(means[has] + stds[has]) + \
        [m for m in means if not math.isnan(m)]
    if drawn:
        lo, hi = value_limits(drawn, percent=metric in METRICS)
        ax.set_ylim(lo, hi)
    bottom = ax.get_ylim()[0]
    ylabel = ("" if stage == FINAL else f"{stage} ") + axis_label(metric)
    ax.set_ylabel(ylabel + (f"\naxis starts at {bottom:.3g}, not 0" if bottom > 0 else ""))
    ax.set_xticks(x, labels, fontsize=7)
    if len(x):
        ax.set_xlim(x.min() - 0.6, x.max() + 0.6)
    sec = ax.secondary_xaxis("top")
    sec.set_xticks(centers, groups, fontsize=9)
    sec.tick_params(length=0)
    sec.set_xlabel(by, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=shade[v]) for v in color_values]
    ax.legend(handles + [plt.Line2D([], [], color="black", marker="_", ms=8, mew=1.2, ls="none"),
                         plt.Line2D([], [], color="black", marker=".", ls="none")],
              [f"{color}={v}" for v in color_values] + ["error bar: ±1 std over seeds (ddof=1),\nas in the tables",
                                                        "dots: seeds"],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0)
    recs = stage_records(records, stage)
    missing = sum(c.missing for c in df["cell"])
    where_from = "each run's final stage (as the tables)" if stage == FINAL else f"stage {stage!r}"
    fig.suptitle(f"{metric} of {where_from} per cell{f', {scope}' if scope else ''}: {len(df)} cells, "
                 f"{format_counts(Counter(r.status for r in recs))}"
                 f"{f' ({missing} finished without {metric})' if missing else ''}; below each bar: mean ± std "
                 f"(n = finished seeds), failed/running counted, not averaged; {AS_TABLES}" + subtitle(recs, notes),
                 fontsize=9)
    fig.tight_layout()
    fit_tick_labels(fig, ax)
    return fig


# ----------------------------------------------------------------------------------------------------------
# 3. Bi-Real Table 1's conclusions: paired differences
# ----------------------------------------------------------------------------------------------------------

PAPER_STYLE = {"marker": "D", "color": "C3", "ms": 8, "mec": "black", "mew": 0.6, "ls": "none"}


def conclusion_slug(name: str) -> str:
    """``shortcut > none`` -> ``shortcut_vs_none`` (for the file name)."""
    return slug(name.replace(" > ", "_vs_").replace(" ", "_"))


def plot_conclusion(name: str, parts, path: Path | str, **kw) -> Path:
    """:func:`conclusion_figure` saved as PNG at ``path``."""
    return save_figure(conclusion_figure(name, parts, **kw), path)


def conclusion_figure(name: str, parts, metric: str = DEFAULT_METRIC, scope: str | None = None,
                      notes: Sequence[str] = ()):
    """One of Bi-Real Table 1's conclusions (section 4.2, e.g. "shortcut > none") in our runs: per part of the runs
    (one row per protocol, split as the tables), each paired difference d_i = 100 (m_better - m_worse) of two runs
    identical except for that option, same seed (dots), their mean (a bar) and the table's 95 % t-interval
    mean ± t_{0.975, n-1} SD / sqrt(n) (shaded; the BCa bootstrap interval below it from 5 pairs), with the
    conclusions table's own rounded numbers (interval, P(better > worse), Holm-adjusted p, verdict)
    (``bireal.conclusions`` via ``figures.conclusion_data``); a zero line and the paper's difference over the same
    Table 1 positions (ImageNet top-1, a red diamond). The numbers are repeated beside each row, the legend sits
    below the axes. A part without pairs gets no row (no ``nan ± nan``): the subtitle names it."""
    rows = [p for p in parts if len(p.diffs)]
    unpaired = [p.label for p in parts if not len(p.diffs)]
    fig, ax = plt.subplots(figsize=(9.0, 2.2 + 1.0 * len(rows)), layout="constrained")
    xs = [0.0]
    for i, part in enumerate(rows):
        r = part.row
        y = len(rows) - 1 - i
        d = np.asarray(part.diffs, dtype=float)
        if len(d):
            ax.scatter(d, np.full(len(d), y) + np.linspace(-0.12, 0.12, len(d)) * (len(d) > 1), s=18, color="black",
                       zorder=4, gid=f"pairs-{i}", label="a pair (same seed, same other options)" if i == 0 else None)
            xs += list(d)
        c = part.stats
        mean, paper_d = float(r["ours (points)"]), float(r["paper (points)"])
        if not math.isnan(mean):
            ax.plot([mean, mean], [y - 0.3, y + 0.3], color="C0", lw=2.5, zorder=3, gid=f"mean-{i}",
                    label="mean paired difference" if i == 0 else None)
            xs.append(mean)
        if not math.isnan(c.lo):
            band = ax.fill_betweenx([y - 0.3, y + 0.3], c.lo, c.hi, color="C0", alpha=0.22, lw=0, zorder=2,
                                    label="95 % t-interval (the table's)" if i == 0 else None)
            band.set_gid(f"band-{i}")
            xs += [c.lo, c.hi]
        if not math.isnan(c.boot_lo):
            ax.plot([c.boot_lo, c.boot_hi], [y - 0.36, y - 0.36], color="C1", lw=1.5, zorder=3, gid=f"boot-{i}",
                    label="95 % bootstrap interval (BCa)" if i == 0 else None)
            xs += [c.boot_lo, c.boot_hi]
        if not math.isnan(paper_d):
            ax.plot([paper_d], [y], zorder=5, gid=f"paper-{i}", **PAPER_STYLE,
                    label="paper's difference (ImageNet top-1, same positions)" if i == 0 else None)
            xs.append(paper_d)
    lo, hi = value_limits(xs, margin=0.08)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axvline(0, color="grey", lw=1, ls="--", zorder=1, label="no difference")
    ax.set_yticks(range(len(rows))[::-1], ["\n".join(textwrap.fill(line, 34) for line in
                                                     p.label.replace(" (", "\n(").splitlines()) for p in rows],
                  fontsize=8)
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(rows))[::-1], [
        f"ours {p.row['ours (points)']:g} {p.row['95% CI']} ({p.row['pairs']} pairs)\n"
        f"P(better > worse) {p.row['P(better > worse)']:g}, p (Holm) {p.row['p (Holm)']}; paper "
        f"{p.row['paper (points)']:g}\n{p.row['verdict']}" for p in rows], fontsize=8)
    right.tick_params(length=0)
    ax.set_xlabel(f"paired difference of {metric} (points)")
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Bi-Real Table 1's conclusion \"{name}\"{f', {scope}' if scope else ''}: paired differences "
                 f"(points; runs identical except that option, same seed); pairs and parts as in tables.py table1"
                 + (f"\nno pairs (no row): {'; '.join(unpaired)}" if unpaired else "")
                 + "".join(f"\n{n}" for n in notes),
                 fontsize=9)
    return fig
