"""Paired differences: a paper's conclusion ("ApproxSign > STE") tested on runs that are identical except for
that one option, with the same seed, so that the seed noise cancels in each difference.

Two runs pair when their cell items (:func:`onebit.records.identity.cell_items`) are equal once the config keys the
option sets (:data:`OPTION_CONFIG`) are removed, and their seeds are equal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from onebit.records.identity import cell_items
from onebit.records.record import RunRecord
from onebit.results.cells import metric, option_value, seed

# the config keys (dotted prefixes) that an option compared by a conclusion sets
OPTION_CONFIG = {
    "sign": ("sign",),
    "weight": ("weight",),
    "pretrain": ("pretrain.name", "pretrain.activation"),
    "structure": ("model.shortcut",),   # Bi-Real vs Plain: the same model without its shortcuts
    "downsample": ("model.downsample",),
    "recipe": ("recipe",),               # one_step vs two_step (the steps after pretraining)
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


def mean_se(diffs: Sequence[float]) -> tuple[float, float]:
    """mean = (1/n) sum_i d_i and SE = std(d, ddof=1) / sqrt(n) over the n paired differences (NaN SE for one
    pair, NaN mean for none)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    return (float(d.mean()) if n else math.nan, float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan)


def verdict(claim: str, n: int, mean: float, se: float) -> str:
    """``positive`` claims (a > b) hold when mean > 0, and say whether |mean| exceeds the seed noise 2 SE;
    ``equal`` claims (a ~ b) hold when |mean| <= 2 SE."""
    if not n:
        return "no paired runs"
    noisy = None if math.isnan(se) else abs(mean) <= 2 * se
    if claim == "equal":
        if noisy is None:
            return "no noise estimate (1 pair)"
        return "holds, within seed noise" if noisy else "does not hold, exceeds seed noise"
    return ("holds" if mean > 0 else "does not hold") + (
        "" if noisy is None else (", within seed noise" if noisy else ", exceeds seed noise"))


def rounded(x: float) -> float:
    return round(x, 2) + 0.0 if not math.isnan(x) else math.nan  # + 0.0: no "-0.0"
