"""Figures from your own runs (and one that needs none), written as PNG files.

    python analysis/plots.py all --root outputs --out analysis/figures   # the four figures below
    python analysis/plots.py curves --study bireal_table1 --stage binary  # mean over seeds per cell, per epoch
    python analysis/plots.py ablation --metric test/top1 --by structure --color sign
    python analysis/plots.py signs --out /tmp/f                           # Bi-Real Fig. 3 (no records needed)
    python analysis/plots.py activations --block layer2.-1                # block inputs, with vs. without shortcuts
    python analysis/plots.py activations --fresh --width 32               # the same, fresh models, no records

This file draws; the runs, cells and numbers come from ``onebit.results`` (the same loader, cells and selection as
the tables): one figure per study (``--all-studies`` mixes them, and the title says so), smoke runs left out
unless ``--include-smoke``, one run per cell and seed (the latest finished), a damaged record named on stderr and
skipped. Failed and running runs never enter a mean or a curve, but every figure counts them.

Exit codes: 0 ok; 1 no records under the root (one line naming it); 2 bad argument (one line listing the valid
values). Every file is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onebit.records import RunRecord  # noqa: E402
from onebit.results.cells import common_options, group_cells, label_items, label_keys  # noqa: E402
from onebit.results.figures import (BANDS, CURVE_METRICS, CellCurves, UsageError, ablation_data,  # noqa: E402,F401
                                    check_stage, curve_data, format_counts, shortcut_pair, stage_records, where)
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


def _percent(metric: str) -> bool:
    return "top" in metric.rsplit("/", 1)[-1]


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if _percent(metric) else metric


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path: Path | str) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and with the user's umask (``onebit.files``)."""
    from onebit.files import atomic_write

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


def plot_curves(records: Sequence[RunRecord], path: Path | str, stage: str = "binary",
                metrics: Sequence[str] = CURVE_METRICS, band: str = "minmax", scope: str | None = None,
                facet: str | None = "auto", notes: Sequence[str] = ()) -> Path:
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
                scale = 100.0 if _percent(m) else 1.0
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
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 2. Ablation bars
# ----------------------------------------------------------------------------------------------------------

def plot_ablation(records: Sequence[RunRecord], path: Path | str, stage: str = "binary", metric: str = "test/top1",
                  by: str = "structure", color: str = "sign", scope: str | None = None,
                  notes: Sequence[str] = ()) -> Path:
    """Bar chart of a final metric per cell (default: ``test/top1`` of the binary stage), the mean over seeds
    with ±1 std error bars (ddof=1), the individual seeds as dots and ``n`` (finished seeds / runs in the cell,
    failed and running counted) above each bar; bars grouped by ``by`` (default ``structure``, the columns of
    Bi-Real Table 1, section 4.2) and coloured by ``color`` (default ``sign``: STE vs. ApproxSign)."""
    df = ablation_data(records, stage, metric, by, color)
    scale = 100.0 if _percent(metric) else 1.0
    groups = list(dict.fromkeys(df[by].map(str)))
    color_values = list(dict.fromkeys(df[color].map(str).sort_values()))
    palette = dict(zip(color_values, _palette(len(color_values))))
    x, centers, pos = [], [], 0.0
    for g in groups:
        n = int((df[by].map(str) == g).sum())
        x.extend(pos + np.arange(n))
        centers.append(pos + (n - 1) / 2)
        pos += n + 1
    x = np.asarray(x)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(x) + 2.5), 5.0))
    means = df["mean"].to_numpy(float) * scale
    stds = df["std"].to_numpy(float) * scale
    colors = [palette[str(v)] for v in df[color]]
    ax.bar(x, np.nan_to_num(means), width=0.8, color=colors, edgecolor="black", lw=0.5)
    ax.errorbar(x, means, yerr=np.where(np.isnan(stds), 0, stds), fmt="none", ecolor="black", capsize=3, lw=1)
    top = np.nanmax(np.concatenate([means + np.nan_to_num(stds), [v * scale for vs in df["values"] for v in vs],
                                    [0.0]])) if len(df) else 1.0
    many = len(x) > 12
    for xi, row in zip(x, df.itertuples()):
        if row.values:
            ax.scatter(np.full(len(row.values), xi) + np.linspace(-0.15, 0.15, len(row.values)),
                       np.asarray(row.values) * scale, s=9, color="black", zorder=3)
        text = f"n={row.n}/{row.runs}"
        if row.failed:
            text += f"\n{row.failed} failed"
        if row.running:
            text += f"\n{row.running} running"
        if row.n:
            text = f"{row.mean * scale:.1f}" + ("" if math.isnan(row.std) else f"±{row.std * scale:.1f}") + \
                "\n" + text
        base = 0.0 if not row.n else (row.mean + (0 if math.isnan(row.std) else row.std)) * scale
        ax.text(xi, base + 0.01 * top, text, ha="center", va="bottom", fontsize=6.5 if many else 7.5,
                rotation=90 if many else 0)
    ax.set_ylim(0, top * (1.35 if many else 1.2) if top > 0 else 1)
    if scale == 100.0 and top <= 100.0:
        ax.set_yticks(np.arange(0, 101, 20))
    ax.set_xticks(x, [str(v) for v in df["label"]], rotation=60 if df["label"].map(len).max() > 6 else 0,
                  ha="right" if df["label"].map(len).max() > 6 else "center", fontsize=7)
    sec = ax.secondary_xaxis("top")
    sec.set_xticks(centers, groups, fontsize=9)
    sec.tick_params(length=0)
    sec.set_xlabel(by, fontsize=9)
    ax.set_ylabel(_axis_label(f"{stage} {metric}"))
    ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[v]) for v in color_values]
    ax.legend(handles + [plt.Line2D([], [], color="black", marker="|", ls="none"),
                         plt.Line2D([], [], color="black", marker=".", ls="none")],
              [f"{color}={v}" for v in color_values] + ["error bar: ±1 std over seeds", "dots: seeds"],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    recs = stage_records(records, stage)
    missing = int(df["missing"].sum())
    fig.suptitle(f"{metric} of stage {stage!r} per cell{f', {scope}' if scope else ''}: {len(df)} cells, "
                 f"{format_counts(Counter(r.status for r in recs))}"
                 f"{f' ({missing} finished without {metric})' if missing else ''}; n = finished seeds / runs "
                 "(failed/running not averaged)" + _subtitle(recs, notes), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


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

    from onebit.quantizers import ApproxSign, Clip, SteSign, SwishSign, binary_sign

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
        bottom.set_ylim(-0.1, max(2.4, float(np.nanmax(c["df"])) * 1.1))
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
    from onebit.models.resnet import BinaryBlock

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

            from onebit.build import model_from_record

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
    from onebit.models import BiRealResNet
    from onebit.quantizers import ApproxSign, MagnitudeAware

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


def plot_activations(path: Path | str, records: Sequence[RunRecord] | None = None, block: str = "layer2.-1",
                     width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = "binary") -> tuple[Path, dict]:
    """Bi-Real section 3.1 (representational capability, cf. Fig. 1): histograms of the real-valued inputs to
    the Sign of one block with shortcuts (Bi-Real) and without (Plain). Without a shortcut a block input is
    BN(binary conv(binary input)), a per-channel affine map of an integer count, so it takes few distinct values;
    the shortcut adds the previous real-valued activation and enlarges that set. Each panel states the number of
    values, of distinct values and the std. Trained checkpoints when available, else fresh models (the title
    says which). Returns (path, data of :func:`activation_data`)."""
    data = activation_data(records, block, width, seed, stage)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (name, title, color) in zip(axes, (("bireal", "with shortcuts (Bi-Real)", "C0"),
                                                ("plain", "without shortcuts (Plain)", "C1"))):
        v, s = data[name]["values"], data[name]["stats"]
        ax.hist(v, bins=120, color=color, alpha=0.85)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"input of the Sign of {block}")
        ax.text(0.98, 0.97, f"values: {s['count']:,}\ndistinct: {s['distinct']:,}\n"
                f"distinct per channel: {s['distinct_per_channel']:,.1f}\nstd: {s['std']:.3g}",
                transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", alpha=0.8))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("count (log)")
    fig.suptitle(f"Bi-Real section 3.1: block inputs to the Sign, {block}, shape "
                 f"{data['bireal']['stats']['shape']}\n{data['source']}: {data['detail']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path), data


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
    return [plot_curves(sel.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}curves-"
                        f"{_slug(args.stage)}.png", args.stage, band=args.band, scope=sel.label, notes=sel.notes)
            for sel in sels]


def cmd_ablation(args, sels=None) -> list[Path]:
    sels = sels if sels is not None else selections(args)
    name = f"ablation-{_slug(args.stage)}-{_slug(args.metric.replace('/', '_'))}-by-{_slug(args.by)}.png"
    return [plot_ablation(sel.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}{name}", args.stage,
                          args.metric, args.by, args.color, scope=sel.label, notes=sel.notes) for sel in sels]


def cmd_signs(args, sels=None) -> list[Path]:
    return [plot_signs(Path(args.out) / "signs.png", beta=args.beta)]


def cmd_activations(args, sels=None) -> list[Path]:
    if sels is None:
        sels = [Selection("fresh models", None, [])] if args.fresh else selections(args)
    paths = []
    for sel in sels:
        prefix = "" if args.fresh else _prefix(args, sel, len(sels) > 1)
        path, data = plot_activations(Path(args.out) / f"{prefix}activations-{_slug(args.block)}.png",
                                      sel.records, args.block, args.width, args.seed)
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
    return paths


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
    rec.add_argument("--stage", default="binary", help="stage: pretrain, binary, bn_retrain or real")
    curves = _Parser(add_help=False)
    curves.add_argument("--band", default="minmax", choices=BANDS, help="shaded band: min-max or ±1 std")
    abl = _Parser(add_help=False)
    abl.add_argument("--metric", default="test/top1")
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
    sub.add_parser("curves", parents=[common, rec, curves], help="training curves per cell (mean over seeds)")
    sub.add_parser("ablation", parents=[common, rec, abl], help="final metric per cell, bars with std and n")
    sub.add_parser("signs", parents=[common, sg], help="Bi-Real Fig. 3: sign approximations and derivatives")
    sub.add_parser("activations", parents=[common, rec, act], help="Sign inputs with vs. without shortcuts")
    sub.add_parser("all", parents=[common, rec, curves, abl, act, sg], help="all four figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"curves": cmd_curves, "ablation": cmd_ablation, "signs": cmd_signs, "activations": cmd_activations,
                "all": cmd_all}
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
