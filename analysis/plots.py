"""Figures from your own runs (and one that needs none), written as PNG files.

    python analysis/plots.py all --root outputs --out analysis/figures   # every figure below that has data
    python analysis/plots.py curves --study bireal_table1 --stage binary  # mean over seeds per cell, per epoch
    python analysis/plots.py ablation --metric test/top1 --by structure --color sign   # the tables' cells as bars
    python analysis/plots.py signs --out /tmp/f                           # Bi-Real Fig. 3 (no records needed)
    python analysis/plots.py activations --block layer2.-1                # block inputs, with vs. without shortcuts
    python analysis/plots.py activations --fresh --width 32               # the same, fresh models, no records
    python analysis/plots.py conclusions                                  # one figure per Bi-Real conclusion

This file draws; the runs, cells and numbers come from ``onebit.results`` (the same loader, cells and selection as
the tables): one figure per study (``--all-studies`` mixes them, and the title says so), smoke runs left out
unless ``--include-smoke``, one run per cell and seed (the latest finished), a damaged record named on stderr and
skipped. Failed and running runs never enter a mean or a curve, but every figure counts them.

What a figure pasted into a paper needs: the ablation bars show the tables' cells (each run's final stage by
default; mean ± std over seeds from ``onebit.results.cells``, n below each bar) on a value axis around the data, not
from 0 (the axis label says where it starts); compared histograms share one x range and their bins; legends sit
outside the axes; each Bi-Real conclusion gets a figure of its paired differences with the conclusions table's
noise band and the paper's difference.

Exit codes: 0 ok; 1 no records under the root (one line naming it); 2 bad argument (one line listing the valid
values). Every file is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from onebit.core.registry import DEFAULT_METRIC, METRICS  # noqa: E402
from onebit.records.record import RunRecord  # noqa: E402
from onebit.results.bireal import CONCLUSIONS  # noqa: E402
from onebit.results.cells import common_options, group_cells, label_items, label_keys  # noqa: E402
from onebit.results.figures import (  # noqa: E402,F401
    BANDS,
    CURVE_METRICS,
    FINAL,
    CellCurves,
    UsageError,
    ablation_data,
    check_metric,
    check_stage,
    conclusion_data,
    curve_data,
    format_counts,
    shortcut_pair,
    stage_records,
    where,
)
from onebit.results.load import NoRunsError, load_records  # noqa: E402
from onebit.results.select import Selection, select  # noqa: E402

PROG = "plots"
BAND_LABEL = {"minmax": "shaded: min-max over seeds", "std": "shaded: mean ± 1 std over seeds (ddof=1)"}
MAX_LINES_PER_PANEL = 8
FALLBACK_WIDTH = 32  # DigitsData.default_width


class NoRecordsError(LookupError):
    """Nothing to plot under the root: exit 1 with this one line."""


def _text(value) -> str:
    return str(value).lower()


def _subtitle(records: Sequence[RunRecord], notes: Sequence[str]) -> str:
    common = common_options(records)
    return "".join([f"\ncommon: {common}" if common else "", *(f"\n{n}" for n in notes)])


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if metric in METRICS else metric


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path: Path | str) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and with the user's umask (``onebit.files``)."""
    from onebit.core.files import atomic_write

    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# 1. Training curves
# ----------------------------------------------------------------------------------------------------------

def choose_facet(cells: Sequence[dict], max_lines: int = MAX_LINES_PER_PANEL) -> str | None:
    """With more than ``max_lines`` cells, the option to split panels by (small multiples): the varying
    option, in label order, that leaves the fewest lines per panel (first one reaching ``max_lines`` wins)."""
    if len(cells) <= max_lines:
        return None
    best, best_lines = None, len(cells)
    for k in label_keys(cells) or []:
        values = Counter(_text(c.get(k)) for c in cells)
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


def plot_curves(records: Sequence[RunRecord], path: Path | str, stage: str = "binary", **kw) -> Path:
    """:func:`curves_figure` saved as PNG at ``path``."""
    return save_figure(curves_figure(records, stage, **kw), path)


def curves_figure(records: Sequence[RunRecord], stage: str = "binary", metrics: Sequence[str] = CURVE_METRICS,
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
    items = [label_items(rs) for rs in group_cells(recs).values()]
    facet = choose_facet(items) if facet == "auto" else facet
    data = curve_data(recs, stage, metrics, band, exclude_label=[facet] if facet else [])
    facet_values = sorted({_text(c.items.get(facet)) for c in data}) if facet else [None]
    labels = list(dict.fromkeys(c.label for c in data))
    colors = dict(zip(labels, _palette(len(labels))))
    ncols = len(facet_values)
    fig, axes = plt.subplots(len(metrics), ncols, figsize=(4.6 * ncols + 1.0, 3.1 * len(metrics)), squeeze=False,
                             sharex=True, sharey="row")
    handles = {}
    for j, fv in enumerate(facet_values):
        for cell in data:
            if facet and _text(cell.items.get(facet)) != fv:
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
                ax.set_ylabel(_axis_label(m))
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if facet and i == 0:
                sub = [c for c in data if _text(c.items.get(facet)) == fv]
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
             f"{format_counts(total)} (only finished runs averaged)")
    fig.suptitle(title + _subtitle(recs, notes), fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# 2. Ablation bars
# ----------------------------------------------------------------------------------------------------------

def value_limits(values, margin: float = 0.12, percent: bool = False) -> tuple[float, float]:
    """An axis range around the data, not from 0: [lo - m, hi + m] with lo / hi the smallest / largest value drawn
    (error bars included) and m = ``margin`` x (hi - lo) (1 when all values are equal); a percent axis is clipped
    to [0, 100] where the data allow. A 3-point effect at 95-98 % fills the axis instead of vanishing."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    m = margin * (hi - lo) if hi > lo else 1.0
    if percent:
        return (max(lo - m, 0.0) if lo >= 0 else lo - m), (min(hi + m, 100.0) if hi <= 100 else hi + m)
    return lo - m, hi + m


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
    palette = dict(zip(color_values, _palette(len(color_values))))
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
    colors = [palette[str(v)] for v in df[color]]
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
    ylabel = ("" if stage == FINAL else f"{stage} ") + _axis_label(metric)
    ax.set_ylabel(ylabel + (f"\naxis starts at {bottom:.3g}, not 0" if bottom > 0 else ""))
    ax.set_xticks(x, labels, fontsize=7)
    if len(x):
        ax.set_xlim(x.min() - 0.6, x.max() + 0.6)
    sec = ax.secondary_xaxis("top")
    sec.set_xticks(centers, groups, fontsize=9)
    sec.tick_params(length=0)
    sec.set_xlabel(by, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[v]) for v in color_values]
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
                 f"(n = finished seeds), failed/running counted, not averaged" + _subtitle(recs, notes), fontsize=9)
    fig.tight_layout()
    fit_tick_labels(fig, ax)
    return fig


# ----------------------------------------------------------------------------------------------------------
# 3. Sign approximations (Bi-Real Fig. 3)
# ----------------------------------------------------------------------------------------------------------


def sign_curves(x: np.ndarray | None = None, beta: float = 5.0) -> dict[str, dict]:
    """Bi-Real Fig. 3 (section 3.2, Eq. 2-3) plus BNN+'s SwishSign: per approximation, ``f`` (the function the
    backward pass pretends the forward is) and ``df`` (its derivative, the pseudo-gradient), on the grid ``x``.

    ``df`` always comes from onebit's real components (``SteSign(1).derivative``, ``ApproxSign().derivative``,
    ``SwishSign(beta).derivative``; sign's derivative is 0 except a Dirac delta at 0); ``f`` is sign
    (``binary_sign``), clip (the ``Clip`` component), ApproxSign's F(x) (Bi-Real Eq. 3) and SwishSign's
    ``2 sigmoid(bx)(1 + bx(1 - sigmoid(bx))) - 1``, so the figure also shows that each component's derivative
    is the slope of the function it claims to approximate (tested)."""
    import torch

    from onebit.nn.quantizers import ApproxSign, Clip, SteSign, SwishSign, binary_sign

    if x is None:
        x = np.linspace(-2, 2, 4001)
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    swish = SwishSign(beta)
    b = swish.beta
    sig = torch.sigmoid(b * t)
    approx_f = torch.where(t < -1, -torch.ones_like(t), torch.where(
        t < 0, 2 * t + t**2, torch.where(t < 1, 2 * t - t**2, torch.ones_like(t))))
    with torch.no_grad():
        curves = {
            "sign": {"f": binary_sign(t.clone()), "df": torch.zeros_like(t),
                     "title": "(a) sign(x)", "component": "binary_sign (derivative: Dirac delta at 0)"},
            "clip": {"f": Clip()(t), "df": SteSign(1.0).derivative(t),
                     "title": "(b) clip(-1, x, 1): STE", "component": "Clip / SteSign(t=1).derivative"},
            "approx": {"f": approx_f, "df": ApproxSign().derivative(t),
                       "title": "(c) ApproxSign F(x)", "component": "ApproxSign().derivative"},
            "swish": {"f": 2 * sig * (1 + b * t * (1 - sig)) - 1, "df": swish.derivative(t),
                      "title": f"(d) SwishSign, b={b:g}", "component": f"SwishSign({b:g}).derivative"},
        }
    for c in curves.values():
        c["f"], c["df"] = c["f"].numpy(), c["df"].numpy()
    curves["x"] = np.asarray(x, dtype=np.float64)
    return curves


def plot_signs(path: Path | str, beta: float = 5.0) -> Path:
    """Bi-Real Fig. 3 (section 3.2): top row the sign function and its differentiable approximations (clip,
    whose derivative is the STE of Eq. 2; ApproxSign's piecewise polynomial F of Eq. 3; SwishSign of BNN+ with
    b = 5), bottom row their derivatives as computed by onebit's components (``.derivative``)."""
    curves = sign_curves(beta=beta)
    x = curves.pop("x")
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 5.6), sharex=True)
    for j, (name, c) in enumerate(curves.items()):
        top, bottom = axes[0][j], axes[1][j]
        top.plot(x, c["f"], color="C0", lw=1.6)
        top.set_title(c["title"], fontsize=10)
        top.set_ylim(-1.3, 1.3)
        bottom.plot(x, c["df"], color="C3", lw=1.6)
        if name == "sign":
            bottom.annotate("", xy=(0, 2.2), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="C3", lw=1.6))
            bottom.text(0.08, 2.0, "δ(x)", color="C3")
        bottom.set_ylim(min(-0.1, float(np.nanmin(c["df"])) * 1.3), max(2.4, float(np.nanmax(c["df"])) * 1.1))
        bottom.set_title(c["component"], fontsize=7.5)
        bottom.set_xlabel("x")
        for ax in (top, bottom):
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F(x)")
    axes[1][0].set_ylabel("∂F/∂x (backward)")
    fig.suptitle("Bi-Real Net Fig. 3: sign and its approximations (top) and their derivatives used in the "
                 "backward pass (bottom)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 4. Block activations with vs. without shortcuts (Bi-Real section 3.1)
# ----------------------------------------------------------------------------------------------------------


def resolve_block(model, spec: str = "layer2.-1"):
    """The residual block named ``layerN.i`` (``i`` may be negative), e.g. ``layer2.-1`` = last block of layer2."""
    from onebit.nn.models.resnet import BinaryBlock

    layer, _, index = spec.partition(".")
    blocks = getattr(model, layer, None)
    valid = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    if blocks is None or not index.lstrip("-").isdigit():
        raise UsageError(f"unknown --block {spec!r}; use layerN.i with layerN in {', '.join(valid)}, e.g. layer2.-1")
    try:
        block = blocks[int(index)]
    except IndexError:
        raise UsageError(f"unknown --block {spec!r}: {layer} has {len(blocks)} blocks "
                         f"(index {-len(blocks)}..{len(blocks) - 1})") from None
    if not isinstance(block, BinaryBlock):
        raise UsageError(f"--block {spec!r} is a {type(block).__name__}, not a BinaryBlock")
    return block


def block_input(model, x, spec: str = "layer2.-1"):
    """The real-valued tensor that the Sign of block ``spec`` binarizes (the input of its first
    ``BinaryConv2d``, before its ``input_quantizer``), captured with a forward pre-hook on one forward pass."""
    import torch

    conv = resolve_block(model, spec).conv1
    captured = []
    handle = conv.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[0]


def activation_stats(t) -> dict:
    """count (number of values), distinct values (whole tensor, and the mean over channels of the distinct values
    per channel, dim 1: the paper's argument is per channel, since BN is a per-channel affine map), mean and std
    (ddof=1) of a tensor, and its shape."""
    import torch

    shape = tuple(t.shape)
    t = t.detach().double()
    per_channel = ([int(torch.unique(t[:, c]).numel()) for c in range(t.shape[1])] if t.dim() > 1 else
                   [int(torch.unique(t).numel())])
    flat = t.flatten()
    return {"count": int(flat.numel()), "distinct": int(torch.unique(flat).numel()),
            "distinct_per_channel": float(np.mean(per_channel)), "mean": float(flat.mean()),
            "std": float(flat.std()), "shape": shape}


def _first_val_batch(data):
    data.setup("fit")
    x, _ = next(iter(data.val_dataloader()))
    return x


def activation_data(records: Sequence[RunRecord] | None = None, block: str = "layer2.-1", width: int = FALLBACK_WIDTH,
                    seed: int = 0, stage: str = "binary") -> dict:
    """Inputs to the Sign of ``block`` for a net with shortcuts (``bireal``) and without (``plain``).

    Trained: when ``records`` hold a finished ``structure=bireal`` / ``structure=plain`` pair (same other options,
    first seed; ``onebit.results.figures.shortcut_pair``) with ``stage`` checkpoints, both models come from
    ``onebit.build.model_from_record`` (eval
    mode) and see the first validation batch of the bireal run's data module. Otherwise (or if loading fails,
    reported on stderr) freshly initialised Bi-Real-18s (ApproxSign, magnitude-aware weights, small stem, digits)
    built after ``torch.manual_seed(seed)``, with BatchNorm in training mode (batch statistics; at init the
    running statistics are the identity), on the first digits validation batch.

    Returns ``{"source": "trained" | "init", "detail": str, "bireal": {...}, "plain": {...}}``, each side with
    ``values`` (numpy), ``stats`` (:func:`activation_stats`, computed from the hooked tensor, with its shape)."""
    import torch

    pair = shortcut_pair(records or [], stage)
    if pair is not None:
        try:
            from hydra.utils import instantiate
            from omegaconf import OmegaConf

            from onebit.training.checkpoints import model_from_record

            models = {name: (model_from_record(rec, stage), rec) for name, rec in zip(("bireal", "plain"), pair)}
            x = _first_val_batch(instantiate(OmegaConf.create(pair[0].config).data))
            out = {"source": "trained", "detail": f"{stage} checkpoints (last.ckpt), seed "
                                                  f"{pair[0].options.get('seed')} ({common_options(pair)})"}
            for name, (model, rec) in models.items():
                t = block_input(model, x, block)
                out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t), "run_dir": rec.run_dir}
            return out
        except UsageError:
            raise
        except Exception as e:  # a missing dataset, an unreadable checkpoint: say so and fall back
            print(f"{PROG}: activations: could not use the trained checkpoints ({type(e).__name__}: {e}); "
                  f"using freshly initialised models", file=sys.stderr)
    from onebit.data import DigitsData
    from onebit.nn.models import BiRealResNet
    from onebit.nn.quantizers import ApproxSign, MagnitudeAware

    x = _first_val_batch(DigitsData(seed=seed))
    out = {"source": "init", "detail": f"freshly initialised Bi-Real-18 (width {width}, seed {seed}, ApproxSign, "
                                       "magnitude-aware, BN batch statistics), no trained bireal/plain pair found"}
    for name, shortcut in (("bireal", True), ("plain", False)):
        torch.manual_seed(seed)
        model = BiRealResNet(ApproxSign(), MagnitudeAware(), depth=18, structure="bireal", shortcut=shortcut,
                             width=width, stem="small", in_channels=1, num_classes=10).train()
        t = block_input(model, x, block)
        out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t)}
    return out


def shared_bins(arrays, bins: int = 120) -> np.ndarray:
    """One set of ``bins`` equal-width bin edges over the range of all ``arrays`` together, so that compared
    histograms share their x range and bins (a count per bin is then comparable across panels)."""
    return np.histogram_bin_edges(np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]), bins=bins)


def plot_activations(path: Path | str, records: Sequence[RunRecord] | None = None, block: str = "layer2.-1",
                     width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = "binary") -> tuple[Path, dict]:
    """:func:`activations_figure` saved as PNG at ``path``; returns (path, data)."""
    fig, data = activations_figure(records, block, width, seed, stage)
    return save_figure(fig, path), data


def activations_figure(records: Sequence[RunRecord] | None = None, block: str = "layer2.-1",
                       width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = "binary"):
    """Bi-Real section 3.1 (representational capability, cf. Fig. 1): histograms of the real-valued inputs to
    the Sign of one block with shortcuts (Bi-Real) and without (Plain), on one shared x range and the same bins
    (:func:`shared_bins`). Without a shortcut a block input is BN(binary conv(binary input)), a per-channel affine
    map of an integer count, so it takes few distinct values; the shortcut adds the previous real-valued
    activation and enlarges that set. Each panel's title states the number of values, of distinct values and the
    std (above the axes, off the data). Trained checkpoints when available, else fresh models (the title says
    which). Returns (figure, data of :func:`activation_data`)."""
    data = activation_data(records, block, width, seed, stage)
    edges = shared_bins([data["bireal"]["values"], data["plain"]["values"]])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True)
    for ax, (name, title, color) in zip(axes, (("bireal", "with shortcuts (Bi-Real)", "C0"),
                                                ("plain", "without shortcuts (Plain)", "C1"))):
        v, s = data[name]["values"], data[name]["stats"]
        ax.hist(v, bins=edges, color=color, alpha=0.85)
        ax.set_yscale("log")
        ax.set_title(f"{title}\nvalues {s['count']:,}, distinct {s['distinct']:,} "
                     f"({s['distinct_per_channel']:,.1f} per channel), std {s['std']:.3g}", fontsize=9)
        ax.set_xlabel(f"input of the Sign of {block}")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(edges[0], edges[-1])
    axes[0].set_ylabel(f"count (log; {len(edges) - 1} shared bins)")
    detail = textwrap.fill(f"{data['source']}: {data['detail']}", 150)
    fig.suptitle(f"Bi-Real section 3.1: block inputs to the Sign, {block}, shape "
                 f"{data['bireal']['stats']['shape']}; one x range and bins for both panels\n{detail}", fontsize=9)
    fig.tight_layout()
    return fig, data


# ----------------------------------------------------------------------------------------------------------
# 5. Bi-Real Table 1's conclusions: paired differences
# ----------------------------------------------------------------------------------------------------------

PAPER_STYLE = {"marker": "D", "color": "C3", "ms": 8, "mec": "black", "mew": 0.6, "ls": "none"}


def conclusion_slug(name: str) -> str:
    """``shortcut > none`` -> ``shortcut_vs_none`` (for the file name)."""
    return _slug(name.replace(" > ", "_vs_").replace(" ", "_"))


def plot_conclusion(name: str, parts, path: Path | str, **kw) -> Path:
    """:func:`conclusion_figure` saved as PNG at ``path``."""
    return save_figure(conclusion_figure(name, parts, **kw), path)


def conclusion_figure(name: str, parts, metric: str = DEFAULT_METRIC, scope: str | None = None,
                      notes: Sequence[str] = ()):
    """One of Bi-Real Table 1's conclusions (section 4.2, e.g. "shortcut > none") in our runs: per part of the runs
    (one row per protocol, split as the tables), each paired difference d_i = 100 (m_better - m_worse) of two runs
    identical except for that option, same seed (dots), their mean (a bar) and the verdict's noise band
    mean ± 2 SE with SE = std(d, ddof=1) / sqrt(n) (shaded), with the conclusions table's own rounded numbers
    (``bireal.conclusions`` via ``figures.conclusion_data``); a zero line and the paper's difference over the same
    Table 1 positions (ImageNet top-1, a red diamond). The numbers are repeated beside each row, the legend sits
    below the axes."""
    rows = list(parts)
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
        mean, se, paper_d = (float(r[k]) for k in ("ours (points)", "SE", "paper (points)"))
        if not math.isnan(mean):
            ax.plot([mean, mean], [y - 0.3, y + 0.3], color="C0", lw=2.5, zorder=3, gid=f"mean-{i}",
                    label="mean paired difference" if i == 0 else None)
            xs.append(mean)
        if not math.isnan(se):
            band = ax.fill_betweenx([y - 0.3, y + 0.3], mean - 2 * se, mean + 2 * se, color="C0", alpha=0.22, lw=0,
                                    zorder=2, label="noise band: mean ± 2 SE (the verdict's)" if i == 0 else None)
            band.set_gid(f"band-{i}")
            xs += [mean - 2 * se, mean + 2 * se]
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
        f"ours {p.row['ours (points)']:g} ± {p.row['SE']:g} SE ({p.row['pairs']} pairs)\n"
        f"paper {p.row['paper (points)']:g}\n{p.row['verdict']}" for p in rows], fontsize=8)
    right.tick_params(length=0)
    ax.set_xlabel(f"paired difference of {metric} (points)")
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Bi-Real Table 1's conclusion \"{name}\"{f', {scope}' if scope else ''}: paired differences "
                 f"(points; runs identical except that option, same seed)" + "".join(f"\n{n}" for n in notes),
                 fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def selections(args) -> list[Selection]:
    """The runs under ``--root`` per study (``onebit.results.select``), filtered by ``--where``; a study left
    empty is named on stderr. Raises :class:`NoRecordsError` when nothing is left."""
    try:
        records, _ = load_records(args.root)
        sels = select(records, args.study, args.all_studies, args.include_smoke)
    except NoRunsError as e:
        raise NoRecordsError(str(e)) from None
    for sel in sels:
        sel.records = where(sel.records, args.where)
    for sel in sels:
        if not sel.records:
            print(f"{PROG}: {sel.label}: no runs to plot ({' '.join(sel.notes) or 'none match --where'})",
                  file=sys.stderr)
    sels = [s for s in sels if s.records]
    if not sels:
        raise NoRecordsError(f"no run records matching {' '.join(args.where)} under {args.root}")
    return sels


def _prefix(args, sel: Selection, several: bool) -> str:
    """File-name prefix: the study when one was asked for or several are drawn; ``all_studies-`` when mixed."""
    if sel.study is None:
        return "all_studies-"
    return f"{_slug(sel.study)}-" if args.study or several else ""


def cmd_curves(args, sels=None) -> list[Path]:
    sels = sels if sels is not None else selections(args)
    stage = args.stage or "binary"
    return [plot_curves(sel.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}curves-"
                        f"{_slug(stage)}.png", stage, band=args.band, scope=sel.label, notes=sel.notes)
            for sel in sels]


def cmd_ablation(args, sels=None) -> list[Path]:
    sels = sels if sels is not None else selections(args)
    stage = args.stage or FINAL
    name = f"ablation-{_slug(stage)}-{_slug(args.metric.replace('/', '_'))}-by-{_slug(args.by)}.png"
    return [plot_ablation(sel.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}{name}", stage,
                          metric=args.metric, by=args.by, color=args.color, scope=sel.label, notes=sel.notes)
            for sel in sels]


def cmd_conclusions(args, sels=None, required: bool = True) -> list[Path]:
    """One figure per Bi-Real Table 1 conclusion with paired runs (``conclusion-bireal-<name>.png``), per study.
    Without any: exit 1 when asked for (``conclusions``), one line on stderr under ``all``."""
    sels = sels if sels is not None else selections(args)
    paths = []
    for sel in sels:
        check_metric(sel.records, FINAL, args.metric)
        found = conclusion_data(sel, args.metric)
        if not found:
            print(f"{PROG}: conclusions: {sel.label}: no paired Bi-Real Table 1 runs (two runs identical except "
                  f"one option of {', '.join(c[1] for c in CONCLUSIONS)}, same seed)", file=sys.stderr)
        prefix = _prefix(args, sel, len(sels) > 1)
        paths += [plot_conclusion(name, parts, Path(args.out) / f"{prefix}conclusion-bireal-{conclusion_slug(name)}"
                                  ".png", metric=args.metric, scope=sel.label, notes=sel.notes)
                  for name, parts in found.items()]
    if required and not paths:
        raise NoRecordsError(f"no paired Bi-Real Table 1 runs to plot under {args.root}")
    return paths


def cmd_signs(args, sels=None) -> list[Path]:
    return [plot_signs(Path(args.out) / "signs.png", beta=args.beta)]


def cmd_activations(args, sels=None) -> list[Path]:
    if sels is None:
        sels = [Selection("fresh models", None, [])] if args.fresh else selections(args)
    paths = []
    for sel in sels:
        prefix = "" if args.fresh else _prefix(args, sel, len(sels) > 1)
        path, data = plot_activations(Path(args.out) / f"{prefix}activations-{_slug(args.block)}.png",
                                      sel.records, args.block, args.width, args.seed, args.stage or "binary")
        for name in ("bireal", "plain"):
            s = data[name]["stats"]
            print(f"activations {data['source']} {name}: {s['count']} values, {s['distinct']} distinct, "
                  f"{s['distinct_per_channel']:.1f} distinct per channel, std {s['std']:.4g}, shape {s['shape']}")
        paths.append(path)
    return paths


def cmd_all(args) -> list[Path]:
    sels = selections(args)
    paths = []
    for cmd in (cmd_curves, cmd_ablation, cmd_signs, cmd_activations):
        paths += cmd(args, sels)
    return paths + cmd_conclusions(args, sels, required=False)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--out", default="analysis/figures", help="folder for the PNG files")
    rec = _Parser(add_help=False)
    rec.add_argument("--root", default="outputs", help="folder searched recursively for record.json")
    rec.add_argument("--study", default=None, help="only records of this study (default: one figure per study)")
    rec.add_argument("--all-studies", action="store_true", help="mix every study in one figure (the title says so)")
    rec.add_argument("--include-smoke", action="store_true",
                     help="include smoke runs (cut short by a Trainer limit; the title says so)")
    rec.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="only records whose option KEY equals VALUE (repeatable)")
    stg = _Parser(add_help=False)
    stg.add_argument("--stage", default=None,
                     help="stage (pretrain, binary, bn_retrain, ...; default binary); the ablation also takes "
                          f"'{FINAL}' (each run's last stage, as the tables; its default)")
    curves = _Parser(add_help=False)
    curves.add_argument("--band", default="minmax", choices=BANDS, help="shaded band: min-max or ±1 std")
    met = _Parser(add_help=False)
    met.add_argument("--metric", default=DEFAULT_METRIC, help="metric of the bars and of the paired differences")
    abl = _Parser(add_help=False)
    abl.add_argument("--by", default="structure", help="option whose values group the bars")
    abl.add_argument("--color", default="sign", help="option whose values colour the bars")
    act = _Parser(add_help=False)
    act.add_argument("--block", default="layer2.-1", help="layerN.i: the block whose Sign input is shown")
    act.add_argument("--width", type=int, default=FALLBACK_WIDTH, help="width of the fresh models (fallback)")
    act.add_argument("--seed", type=int, default=0, help="seed of the fresh models (fallback)")
    act.add_argument("--fresh", action="store_true",
                     help="activations: use freshly initialised models, read no records (works without runs)")
    sg = _Parser(add_help=False)
    sg.add_argument("--beta", type=float, default=5.0, help="SwishSign's b")

    parser = _Parser(prog="plots.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("curves", parents=[common, rec, stg, curves], help="training curves per cell (mean over seeds)")
    sub.add_parser("ablation", parents=[common, rec, stg, met, abl], help="final metric per cell, bars with std and n")
    sub.add_parser("signs", parents=[common, sg], help="Bi-Real Fig. 3: sign approximations and derivatives")
    sub.add_parser("activations", parents=[common, rec, stg, act], help="Sign inputs with vs. without shortcuts")
    sub.add_parser("conclusions", parents=[common, rec, met],
                   help="Bi-Real Table 1's conclusions: paired differences, noise band, the paper's difference")
    sub.add_parser("all", parents=[common, rec, stg, curves, met, abl, act, sg],
                   help="all figures (conclusions where paired runs exist)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"curves": cmd_curves, "ablation": cmd_ablation, "signs": cmd_signs, "activations": cmd_activations,
                "conclusions": cmd_conclusions, "all": cmd_all}
    try:
        paths = commands[args.command](args)
    except NoRecordsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
