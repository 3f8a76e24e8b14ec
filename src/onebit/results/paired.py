"""Paired differences: a paper's conclusion ("ApproxSign > STE") tested on runs that are identical except for
that one option, with the same seed, so that the seed noise cancels in each difference; the statistics of a
conclusions table (intervals, P(better > worse), Holm, verdicts, how many seeds) from ``onebit.results.stats``.

Two runs pair when their cell items (:func:`onebit.records.identity.cell_items`) are equal once the config keys the
option sets (:data:`OPTION_CONFIG`) are removed, and their seeds are equal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import pandas as pd

from onebit.records.identity import cell_items
from onebit.records.record import RunRecord
from onebit.results import sequential, stats
from onebit.results.cells import metric, option_value, seed, seed_label

# the config keys (dotted prefixes) that an option compared by a conclusion sets
OPTION_CONFIG = {
    "sign": ("sign",),
    "weight": ("weight",),
    "pretrain": ("pretrain.name", "pretrain.activation"),
    "structure": ("model.shortcut",),   # Bi-Real vs Plain: the same model without its shortcuts
    "downsample": ("model.downsample",),
    "recipe": ("recipe", "distill"),     # one_step vs two_step: the steps after pretraining and their teacher
    "distill": ("distill",),             # a teacher or none (conf/distill)
    "learnable_threshold": ("sign.learnable_threshold",),   # ReActNet's RSign or a fixed sign(x)
    "optimizer": ("optimizer",),         # Bop vs latent weights: the whole optimizer
}


@dataclass(frozen=True)
class Pair:
    better: RunRecord
    worse: RunRecord
    diff: float   # points: 100 * (metric(better) - metric(worse))


def _pair_key(rec: RunRecord, option: str) -> str:
    prefixes = OPTION_CONFIG[option]
    items = {k: v for k, v in cell_items(rec.config).items()
             if not any(k == p or k.startswith(p + ".") for p in prefixes)}
    return json.dumps([items, seed(rec)], sort_keys=True, default=str)


def pairs(records: Sequence[RunRecord], option: str, better, worse, metric_name: str) -> list[Pair]:
    """Every (better, worse) pair of finished runs with the final-stage metric: ``option`` is ``better`` in one
    and ``worse`` in the other, everything else and the seed are equal. d = 100 (m_better - m_worse)."""
    if option not in OPTION_CONFIG:
        raise ValueError(f"no paired comparison for option {option!r}; valid: {', '.join(OPTION_CONFIG)}")
    sides: dict[str, dict[str, RunRecord]] = {"better": {}, "worse": {}}
    for rec in records:
        value = option_value(rec, option)
        side = "better" if value == better else "worse" if value == worse else None
        if side and rec.status == "finished" and metric(rec, metric_name) is not None:
            sides[side].setdefault(_pair_key(rec, option), rec)
    out = []
    for key in sorted(set(sides["better"]) & set(sides["worse"])):
        b, w = sides["better"][key], sides["worse"][key]
        out.append(Pair(b, w, 100.0 * (metric(b, metric_name) - metric(w, metric_name))))
    return out


def comparisons(found: Sequence[Sequence[Pair]], claims: Sequence[tuple[str, float | None]] | None = None,
                alpha: float = stats.ALPHA, records: Sequence[RunRecord] = (), names: Sequence[str] = ()
                ) -> list[stats.Comparison]:
    """The conclusions of one table, each from its pairs (``stats.compare`` with its claim: ``("positive",
    None)`` or ``("equal", margin)``), Holm-adjusted together (``stats.family``). When ``records`` come from a
    ``hydra.sweeper.seeds=auto`` sweep (their ``config["sequential"]``), the verdicts are the sequential design's
    instead (:func:`sequential_verdicts`): a fixed-sample test after data-dependent stopping would not keep its
    level."""
    claims = claims or [("positive", None)] * len(found)
    tested = stats.family([stats.compare([p.diff for p in pairs_], claim, margin)
                           for pairs_, (claim, margin) in zip(found, claims)], alpha)
    design = design_of(records)
    return tested if design is None else sequential_verdicts(design, found, tested, names)


def conclusions_frame(found: Sequence[Sequence[Pair]], names: Sequence[str], records: Sequence[RunRecord],
                      row: Callable[[int, dict, stats.Comparison], dict],
                      claims: Sequence[tuple[str, float | None]] | None = None, order: Sequence[str] | None = None,
                      notes: Sequence[str] = ()) -> pd.DataFrame:
    """A paper table's conclusions frame: the conclusions ``names`` tested together from their pairs ``found``
    (:func:`comparisons`, Holm over the rows, ``claims``; ``records``: the table's runs, for a sequential design),
    one row per conclusion, ``row(i, columns(tested[i]), tested[i])`` (columns ``order`` when given), and its notes:
    ``notes``, then the design's (:func:`design_notes`) and how many seeds would decide each open one
    (:func:`power_notes`)."""
    tested = comparisons(found, claims, records=records, names=names)
    frame = pd.DataFrame([row(i, columns(c), c) for i, c in enumerate(tested)], columns=order)
    frame.attrs["notes"] = [*notes, *design_notes(records, names, tested), *power_notes(names, tested)]
    return frame


class MixedDesignsError(LookupError):
    """The runs of one table state different sequential designs: no single rule gives their verdicts (one line,
    exit 1)."""


def design_of(records: Sequence[RunRecord]) -> sequential.Design | None:
    """The sequential design the records state (``sequential.design_of``), None for a fixed design."""
    try:
        return sequential.design_of(records) if records else None
    except ValueError as e:
        raise MixedDesignsError(f"{e}; tables need one design per table: run the sweep again with one "
                                "hydra.sweeper setting, or select runs with --study") from None


def sequential_verdicts(design: sequential.Design, found: Sequence[Sequence[Pair]],
                        tested: Sequence[stats.Comparison], names: Sequence[str]) -> list[stats.Comparison]:
    """The verdicts of a sequential design (``onebit.results.sequential.decide`` on each conclusion's differences by
    seed, Holm within a look, the family = the table's conclusions with a positive claim): the verdict, the look
    that decided it, its level and Holm p replace the fixed-sample ones. An "equal" claim is not decided by the
    sequential rule (it tests differences from 0): it stays ``inconclusive`` (its note says so)."""
    names = list(names) or [f"conclusion {i + 1}" for i in range(len(found))]
    diffs = {name: {seed_label(p.better): p.diff for p in pairs_}
             for name, pairs_, c in zip(names, found, tested) if c.claim == "positive"}
    decisions = sequential.decide(diffs, design.looks(), design.alpha) if diffs else {}
    out = []
    for name, c in zip(names, tested):
        d = decisions.get(name)
        if d is None:
            out.append(replace(c, rule="sequential", verdict=stats.INCONCLUSIVE, p_adj=math.nan))
        else:
            out.append(replace(c, rule="sequential", verdict=d.verdict, p_adj=d.p_adj, look=d.look, look_n=d.n,
                               level=d.level))
    return out


def design_notes(records: Sequence[RunRecord], names: Sequence[str], tested: Sequence[stats.Comparison]
                 ) -> list[str]:
    """The lines that state a sequential design under its table (none for a fixed design): the procedure, and per
    conclusion the look that decided it (or that it stayed open)."""
    design = design_of(records)
    if design is None:
        return []
    notes = [design.describe() + "; the verdicts and 'p (Holm)' are that rule's (Holm p at the deciding look, "
             "against its level), the intervals use every pair"]
    for name, c in zip(names, tested):
        if c.claim != "positive":
            notes.append(f"{name}: an equivalence claim, not decided by the sequential rule: inconclusive")
        elif c.verdict != stats.INCONCLUSIVE:
            notes.append(f"{name}: {c.verdict} at look {c.look} ({c.look_n} pairs, level {c.level:.3g}, Holm p "
                         f"{round_p(c.p_adj)})")
        elif c.look:
            notes.append(f"{name}: still open after look {c.look} ({c.look_n} pairs, level {c.level:.3g}, Holm p "
                         f"{round_p(c.p_adj)}): inconclusive")
    return notes


def columns(c: stats.Comparison) -> dict:
    """A conclusion's statistics as table columns: the mean (points), the 95 % t-interval, the bootstrap
    interval (from 5 pairs), the pairs, P(better > worse) and the Holm-adjusted p (rounded as printed)."""
    return {"ours (points)": rounded(c.mean), "95% CI": stats.interval_text(c.lo, c.hi),
            "bootstrap 95% CI": stats.interval_text(c.boot_lo, c.boot_hi), "pairs": c.n,
            "P(better > worse)": rounded(c.p_improve), "p (Holm)": round_p(c.p_adj)}


def round_p(p: float) -> str:
    """A p-value as printed: 2 significant digits (``0.0031``, ``0.21``), ``<0.001`` below 0.001, ``–`` without one
    (fewer than 2 pairs)."""
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def power_notes(names: Sequence[str], found: Sequence[stats.Comparison], alpha: float = stats.ALPHA,
                power: float = stats.POWER) -> list[str]:
    """The lines under a conclusions table: the smallest effect the current pairs detect (``power``, two-sided, at
    alpha / m, Holm's strictest step over the m conclusions with pairs) and, per inconclusive conclusion, why when
    its unadjusted interval excludes 0 (Holm), and the pairs (seeds per cell) that would decide its observed effect
    (``stats.pairs_needed``)."""
    tested = [(name, c) for name, c in zip(names, found) if c.n >= 2]
    if not tested:
        return []
    level = alpha / len(tested)
    detect = "; ".join(f"{name}: {stats.detectable_effect(c.n, c.sd, level, power):.2f} points ({c.n} pairs)"
                       if c.sd > 0 else f"{name}: – (no spread over {c.n} pairs)" for name, c in tested)
    notes = [(f"smallest effect these pairs detect ({power:.0%} power, two-sided paired t-test at alpha/m = "
              f"{alpha:g}/{len(tested)} = {level:.3g}, from each conclusion's observed pair SD): {detect}")]
    for name, c in tested:
        if c.verdict != stats.INCONCLUSIVE:
            continue
        if c.rule == "holm" and c.claim == "positive" and (c.lo > 0 or c.hi < 0):
            notes.append(f"{name}: its 95 % interval excludes 0, but its Holm-adjusted p ({round_p(c.p_adj)}, "
                         f"{len(tested)} conclusions tested) does not reach {alpha:g}: inconclusive")
        n = stats.pairs_needed(c.mean, c.sd, level, power, c.claim, c.margin)
        observed = f"observed {rounded(c.mean):.2f} ± {rounded(c.sd):.2f} (mean ± SD of {c.n} pairs)"
        if n is None:
            notes.append(f"{name} is inconclusive; no number of seeds decides it from the {observed}: its effect is "
                         f"too close to {'the margin' if c.claim == 'equal' else '0'}")
        else:
            notes.append(f"{name} is inconclusive; about {n} seeds per cell would decide its {observed} with "
                         f"{power:.0%} power (python src/train.py -m ... seed=0,1,...,{n - 1})")
    for name, c in zip(names, found):
        if c.n < 2:
            notes.append(f"{name}: {c.n} pair{'s' if c.n != 1 else ''}, no interval (inconclusive)")
    return notes


def rounded(x: float) -> float:
    return round(x, 2) + 0.0 if not math.isnan(x) else math.nan  # + 0.0: no "-0.0"
