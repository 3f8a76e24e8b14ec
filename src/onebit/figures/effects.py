"""The interaction plot of a study's effects (``onebit.results.effects``): for a full factorial, one panel per pair
of factors (a, b): the model's mean at each level of a (x) with one line per level of b, averaged over the other
factors and the seed blocks, with the model's 95 % interval as bars (non-parallel lines = an interaction). For any
other design (one factor, a one-factor-at-a-time star alone or crossed with a grid, an incomplete grid) one panel
of the effects the model could estimate, main effects and the estimable interactions, each with its 95 % interval
and a zero line. The numbers are the effects table's fit; this module only draws."""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path

import numpy as np

from onebit.figures.common import axis_label, palette, plt, save_figure, value_limits
from onebit.results.effects import FACTORIAL, Effects

PANEL = (4.2, 3.4)     # inches per panel
MAX_COLUMNS = 3


def plot_effects(eff: Effects, path: Path | str) -> Path | None:
    """:func:`effects_figure` saved as PNG at ``path``; None (nothing written) when nothing was estimable."""
    fig = effects_figure(eff)
    return None if fig is None else save_figure(fig, path)


def effects_figure(eff: Effects):
    """The figure (see the module docstring), or None when the model could not be fitted."""
    if eff.result is None:
        return None
    pairs = list(itertools.combinations(eff.factors, 2)) if eff.design == FACTORIAL else []
    n = max(1, len(pairs))
    cols = min(MAX_COLUMNS, n)
    rows = math.ceil(n / cols)
    size = (PANEL[0] * cols, PANEL[1] * rows + 1.2) if pairs else (8.0, 1.8 + 0.5 * len(eff.frame))
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if pairs:
        for ax, (a, b) in zip(axes.flat, pairs):
            _interaction_panel(ax, eff, a, b)
        what = "model means ± 95 % interval, averaged over the other factors and the seeds"
    else:
        _effects_panel(axes.flat[0], eff)
        what = (f"{eff.design}: the estimable effects" + (" and interactions" if eff.pairs else "")
                + " ± 95 % interval, no interaction plot")
    notes = "\n".join(textwrap.fill(line, 130) for line in eff.notes if not line.startswith(("model:", "verdict:")))
    fig.suptitle(f"Effects and interactions, {eff.label} ({what})" + (f"\n{notes}" if notes else ""), fontsize=9)
    return fig


def _interaction_panel(ax, eff: Effects, a: str, b: str) -> None:
    """Means of a's levels (x), one line per level of b, with interval bars; the lines are dodged apart."""
    means = eff.means([a, b])
    xa, lb = eff.levels[a], eff.levels[b]
    colors = palette(len(lb))
    dodge = np.linspace(-0.08, 0.08, len(lb)) if len(lb) > 1 else [0.0]
    for i, level in enumerate(lb):
        m = means[means[b] == level].set_index(a).loc[xa]
        x = np.arange(len(xa)) + dodge[i]
        ax.plot(x, m["mean"], marker="o", color=colors[i], label=f"{b}={level}", gid=f"line-{a}-{b}-{level}")
        if m["low"].notna().all():
            ax.errorbar(x, m["mean"], yerr=[m["mean"] - m["low"], m["high"] - m["mean"]], fmt="none",
                        ecolor=colors[i], capsize=3, lw=1)
    drawn = [v for c in ("mean", "low", "high") for v in means[c] if not math.isnan(v)]
    ax.set_ylim(*value_limits(drawn, percent=eff.unit == "points"))
    ax.set_xticks(range(len(xa)), [textwrap.fill(v, 14) for v in xa], fontsize=8)
    ax.set_xlim(-0.4, len(xa) - 0.6)
    ax.set_xlabel(a, fontsize=9)
    ax.set_ylabel(axis_label(eff.metric), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="best")


def _effects_panel(ax, eff: Effects) -> None:
    """The estimable effects (points) as dots with their interval, one row each, a zero line."""
    f = eff.frame
    y = np.arange(len(f))[::-1]
    ax.plot(f["estimate"], y, "o", color="C0", gid="estimates")
    has = f["low"].notna().to_numpy()
    if has.any():
        ax.errorbar(f["estimate"][has], y[has],
                    xerr=[(f["estimate"] - f["low"])[has], (f["high"] - f["estimate"])[has]],
                    fmt="none", ecolor="C0", capsize=3, lw=1)
    ax.axvline(0, color="grey", lw=1, ls="--")
    drawn = [v for c in ("estimate", "low", "high") for v in f[c] if not math.isnan(v)] + [0.0]
    ax.set_xlim(*value_limits(drawn, margin=0.08))
    ax.set_yticks(y, [textwrap.fill(f"{e} ({v})", 40) for e, v in zip(f["effect"], f["verdict"])], fontsize=8)
    ax.set_ylim(-0.6, len(f) - 0.4)
    ax.set_xlabel(f"effect on {eff.metric} ({eff.unit})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
