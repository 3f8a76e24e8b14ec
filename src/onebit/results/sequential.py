"""Seeds chosen by the data: a group-sequential design over seeds, and the decisions it allows at each look.

A sweep with ``hydra.sweeper.seeds=auto`` (src/hydra_plugins/onebit_sweeper/adaptive.py) runs its comparisons on
the first n_1 seeds, looks, and adds seeds only to the comparisons still open, at the looks

    n_1 = initial seeds < n_2 = n_1 + step < ... < n_K = max seeds (the last step capped),

with information fraction t_k = n_k / n_K. The error it may commit is spent over the looks by the Lan-DeMets
O'Brien-Fleming-type spending function (Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials",
Biometrika 70(3): 659-663, their Eq. for alpha_1^*(t)):

    A(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)),   A(0) = 0,  A(1) = alpha,

so look k tests at the level alpha_k = A(t_k) - A(t_{k-1}) (tiny at first: an early stop needs a large effect).

**The decision at look k.** Each comparison still open is tested on the pairs of the first n_k seeds (in the
design's seed order; a seed whose job failed gives no pair), by the two-sided paired t-test
(:func:`onebit.results.stats.paired_p`); Holm's step-down (:func:`onebit.results.stats.holm`, Holm 1979) runs
across the comparisons still open, at level alpha_k. A comparison whose Holm-adjusted p < alpha_k is decided at
look k: ``supported`` when its mean difference is > 0, ``contradicted`` when < 0 (the words of
:mod:`onebit.results.stats`). A comparison still open after the last look (or when the sweep stopped on its run
budget) is ``inconclusive``.

**Why looking after every batch does not inflate false positives.** Let T be the comparisons whose true mean
difference is 0. A true comparison leaves the open set only by being rejected, so at the look k of the *first*
false rejection every member of T is still open, and Holm at level alpha_k over a family that contains T rejects
one of them only if min_{i in T} p_{i,k} <= alpha_k / |T| (Holm 1979), whose probability is <= alpha_k (Bonferroni).
Summing over the looks (the union bound, Bonferroni over looks),

    P(any false decision) <= sum_k alpha_k = A(1) = alpha,

whatever the correlation between looks (the same seeds enter every later look). That makes the procedure
conservative: exact group-sequential boundaries (computed from the joint distribution of the statistics, Jennison
& Turnbull 2000, ch. 7) spend the same alpha with less loss of power; the union bound needs no distributional
assumption across looks, which a t-test on 3 to 10 pairs could not support. A decision's sign is wrong (a true
effect > 0 called ``contradicted``) with probability <= alpha / 2 summed the same way. tests/test_adaptive_seeds.py
checks it by simulation (>= 2,000 designs): the family-wise false-positive rate stays <= alpha, and on true effects
the design stops before its last look.

:func:`decide` is a pure function of the per-seed differences: the sweeper calls it after each look, and a table
calls it on the records of a finished sweep (each carries the design in ``config["sequential"]``,
:meth:`Design.from_config`), so both give the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from onebit.core.registry import DEFAULT_METRIC, METRICS
from onebit.records.record import RunRecord
from onebit.results.stats import ALPHA, CONTRADICTED, INCONCLUSIVE, SUPPORTED, holm, paired_p

SPENDING = "lan_demets_obrien_fleming"   # the one spending function: A(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))
MIN_SEEDS = 2                            # a paired t-test needs two pairs


def looks(initial: int, step: int, max_seeds: int) -> tuple[int, ...]:
    """The numbers of seeds at which the design looks: n_1 = ``initial``, n_{k+1} = n_k + ``step``, the last one
    capped at ``max_seeds`` (``looks(3, 2, 8) = (3, 5, 7, 8)``)."""
    if initial < 1 or step < 1 or max_seeds < initial:
        raise ValueError(f"no looks for initial={initial}, step={step}, max_seeds={max_seeds}: need initial >= 1, "
                         "step >= 1 and max_seeds >= initial")
    return (*range(initial, max_seeds, step), max_seeds)


def spent(t: float, alpha: float = ALPHA) -> float:
    """A(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) for 0 < t <= 1, A(0) = 0: the error spent by information fraction t
    (Lan & DeMets 1983, the O'Brien-Fleming-type spending function)."""
    if t <= 0:
        return 0.0
    return float(2 * norm.sf(norm.isf(alpha / 2) / math.sqrt(min(t, 1.0))))


def levels(ns: Sequence[int], alpha: float = ALPHA) -> tuple[float, ...]:
    """alpha_k = A(t_k) - A(t_{k-1}) with t_k = n_k / n_K, A of :func:`spent`: the level of each look (they sum to
    ``alpha``; Lan & DeMets 1983's discrete boundaries, here used with the union bound, see the module docstring)."""
    t = [n / ns[-1] for n in ns]
    return tuple(spent(b, alpha) - spent(a, alpha) for a, b in zip([0.0, *t[:-1]], t))


@dataclass(frozen=True)
class Design:
    """A sequential design over seeds: ``initial_seeds`` first, ``seed_step`` more at each look, at most
    ``max_seeds`` (and at most ``max_runs`` jobs in all, None: no budget), at family-wise level ``alpha``, deciding on
    ``metric`` (of each run's final stage). Invalid values raise ValueError, one line naming the field."""

    initial_seeds: int = 3
    seed_step: int = 2
    max_seeds: int = 10
    alpha: float = ALPHA
    metric: str = DEFAULT_METRIC
    max_runs: int | None = field(default=None, compare=False)   # a budget: it stops a sweep, it is not the test

    def __post_init__(self):
        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not integer(self.initial_seeds) or self.initial_seeds < MIN_SEEDS:
            raise ValueError(f"initial_seeds={self.initial_seeds!r} is invalid: must be an integer >= {MIN_SEEDS} "
                             "(a paired t-test needs two pairs)")
        if not integer(self.seed_step) or self.seed_step < 1:
            raise ValueError(f"seed_step={self.seed_step!r} is invalid: must be a positive integer")
        if not integer(self.max_seeds) or self.max_seeds < self.initial_seeds:
            raise ValueError(f"max_seeds={self.max_seeds!r} is invalid: must be an integer >= initial_seeds="
                             f"{self.initial_seeds}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha!r} is invalid: must be a number in (0, 1)")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is invalid: choose one of {', '.join(METRICS)}")
        if self.max_runs is not None and (not integer(self.max_runs) or self.max_runs < 1):
            raise ValueError(f"max_runs={self.max_runs!r} is invalid: must be a positive integer or null (no budget)")

    def looks(self) -> tuple[int, ...]:
        return looks(self.initial_seeds, self.seed_step, self.max_seeds)

    def levels(self) -> tuple[float, ...]:
        return levels(self.looks(), self.alpha)

    def as_config(self) -> dict[str, Any]:
        """What a job's record keeps (``config["sequential"]``): the design, its spending function, looks and
        levels."""
        return {"initial_seeds": self.initial_seeds, "seed_step": self.seed_step, "max_seeds": self.max_seeds,
                "alpha": self.alpha, "metric": self.metric, "max_runs": self.max_runs, "spending": SPENDING,
                "looks": list(self.looks()), "levels": [float(f"{x:.6g}") for x in self.levels()]}

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Design | None:
        """The design of a record's ``config["sequential"]`` (None for a run of a fixed design)."""
        if not node:
            return None
        if node.get("spending", SPENDING) != SPENDING:
            raise ValueError(f"spending={node.get('spending')!r} is unknown; valid: {SPENDING}")
        return cls(**{k: node[k] for k in ("initial_seeds", "seed_step", "max_seeds", "alpha", "metric", "max_runs")
                      if k in node})

    def describe(self) -> str:
        """One line for a table's notes and the sweep's first line."""
        ns = self.looks()
        budget = f", at most {self.max_runs} runs" if self.max_runs else ""
        return (f"seeds chosen by the data: looks at {', '.join(map(str, ns))} seeds{budget}; level per look "
                f"alpha_k = A(t_k) - A(t_k-1), A(t) = 2 - 2 Phi(z_(1-alpha/2) / sqrt(t)), t_k = n_k / {ns[-1]} "
                f"(Lan-DeMets O'Brien-Fleming spending, alpha = {self.alpha:g}); Holm across the open comparisons at "
                "each look; Bonferroni over looks (conservative)")


@dataclass(frozen=True)
class Decision:
    """A comparison's state after the looks so far: its ``verdict`` (supported / contradicted / inconclusive), the
    ``look`` (1-based) that decided it (for an open one: the last look evaluated), that look's ``level`` alpha_k,
    and the numbers of that look: ``n`` pairs, their ``mean`` difference, the t-test's ``p`` and Holm's ``p_adj``
    across the comparisons open at that look."""

    verdict: str
    look: int
    n: int
    mean: float
    p: float
    p_adj: float
    level: float

    @property
    def decided(self) -> bool:
        return self.verdict != INCONCLUSIVE


def _value(v: float | Iterable[float]) -> float:
    """One pair's difference: a number, or the mean of several (one seed's differences over a grid's other keys)."""
    if isinstance(v, (int, float)):
        return float(v)
    values = [float(x) for x in v]
    return float(np.mean(values)) if values else math.nan


def decide(diffs: Mapping[str, Mapping[Any, float | Iterable[float]]], ns: Sequence[int], alpha: float = ALPHA,
           seeds: Sequence[Any] | None = None, through: int | None = None) -> dict[str, Decision]:
    """The decision of each comparison after the looks of a group-sequential design (module docstring): at look k,
    the two-sided paired t-test of each open comparison on the pairs of the first n_k seeds, Holm (1979) across the
    open ones at level alpha_k; adjusted p < alpha_k decides it (supported: mean > 0, contradicted: mean < 0).

    ``diffs``: comparison name -> {seed: its difference (a number, or several to average)}; a seed without a pair
    is absent. ``ns``: the looks' numbers of seeds (:func:`looks`). ``seeds``: the design's seeds in order (look k
    uses the pairs of ``seeds[:n_k]``; default 0, 1, 2, ...: the seeds a seeds=auto sweep runs). ``through``: the
    looks to evaluate (default: up to the first look that covers every seed present, so that a sweep stopped early,
    by its budget, is not tested at looks it never made)."""
    order = list(seeds) if seeds is not None else list(range(ns[-1]))
    position = {s: i for i, s in enumerate(order)}
    if through is None:
        present = [position[s] for d in diffs.values() for s in d if s in position]
        last = max(present, default=-1) + 1
        through = next((k + 1 for k, n in enumerate(ns) if n >= last), len(ns))
    lv = levels(ns, alpha)
    state: dict[str, Decision] = {}
    open_ = list(diffs)
    for k in range(min(through, len(ns))):
        window = set(order[:ns[k]])
        pairs = {c: [_value(v) for s, v in diffs[c].items() if s in window] for c in open_}
        pairs = {c: [x for x in d if not math.isnan(x)] for c, d in pairs.items()}
        ps = [paired_p(pairs[c]) for c in open_]
        adjusted = holm(ps, lv[k])
        still = []
        for c, p, q in zip(open_, ps, adjusted):
            mean = float(np.mean(pairs[c])) if pairs[c] else math.nan
            rejected = not math.isnan(q) and q < lv[k] and mean != 0
            verdict = (SUPPORTED if mean > 0 else CONTRADICTED) if rejected else INCONCLUSIVE
            state[c] = Decision(verdict, k + 1, len(pairs[c]), mean, p, q, lv[k])
            if not rejected:
                still.append(c)
        open_ = still
        if not open_:
            break
    return {c: state.get(c, Decision(INCONCLUSIVE, 0, 0, math.nan, math.nan, math.nan, math.nan)) for c in diffs}


def design_of(records: Iterable[RunRecord]) -> Design | None:
    """The sequential design that the runs' ``config["sequential"]`` states (None when no run has one: a fixed
    design). Raises ValueError, one line, when two runs state different designs (a sweep re-run with another
    max_seeds, say): their verdicts would not follow one procedure."""
    found: dict[Design, str] = {}
    for rec in records:
        d = Design.from_config((rec.config or {}).get("sequential"))
        if d is not None:
            found.setdefault(d, rec.run_dir)
    if len(found) > 1:
        (a, ra), (b, rb) = list(found.items())[:2]
        raise ValueError(f"the runs state different sequential designs: {ra} has looks {a.looks()} at alpha "
                         f"{a.alpha:g} "
                         f"on {a.metric}, {rb} has looks {b.looks()} at alpha {b.alpha:g} on {b.metric}")
    return next(iter(found), None)
