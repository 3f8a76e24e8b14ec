"""Main effects and two-way interactions of a study's options: all of them for a full factorial grid, the ones its
runs can estimate for any other design.

The factors are the options that tell the study's cells apart (:func:`onebit.results.cells.label_keys`: Bi-Real
Table 1's structure, sign, weight and pretrain, not the collinear ``model``); only finished runs with the metric on
their final stage enter (x 100 for an accuracy: points), and only complete blocks: the seeds that every cell has.
For a full factorial the model is the two-way ANOVA with the seed as a block (Montgomery, *Design and Analysis of
Experiments*, 9th ed., ch. 5 and 4.2), fitted by OLS (statsmodels' formula API,
``y ~ (C(a) + C(b) + C(c))**2 + C(seed)``):

    y_{ijk..s} = mu + a_i + b_j + c_k + (ab)_{ij} + (ac)_{ik} + (bc)_{jk} + block_s + e_{ijk..s},  e ~ N(0, s^2)

The effects are contrasts of the cell means m(a, b, ..) = E[y | a, b, .., averaged over the blocks] of the fitted
model, each a linear combination L beta of its parameters (``results.t_test(L)``, L = a difference of design rows
averaged over the grid, built with patsy from the model's own design_info: right for any coding):

- main effect "a: a1 vs a0" = mean over the other factors' levels of [m(a1, ..) - m(a0, ..)];
- interaction "a (a1 vs a0) x b (b1 vs b0)" = mean over the other factors of
  [m(a1, b1) - m(a0, b1) - m(a1, b0) + m(a0, b0)] (how much a's effect changes when b goes from b0 to b1).

Each comes with its 95 % t-interval (unadjusted), its p-value Holm-adjusted across all effects of the fit
(:func:`onebit.results.stats.holm`), and a verdict: ``positive`` / ``negative`` when the adjusted p < 0.05 (the
estimate's sign), else ``inconclusive``. The reference level a0 is the first of a factor's levels: the paper's worse
option when the factor is a registered conclusion's option (Bi-Real's sign: approx vs ste), else the natural order.

A design that is not a full factorial (:func:`onebit.results.designs.classify`) gets the largest hierarchical model
its runs estimate (:func:`onebit.results.designs.estimable_pairs`): every main effect, the seed block, and each
two-way term that keeps the design matrix at full column rank, so every contrast below is estimable (Searle,
*Linear Models*, 1971, ch. 5). A one-factor-at-a-time star crossed with a grid (the committed example: four
options one at a time x the optimizer) keeps each crossed factor's interaction with every other factor and drops
the star's pairs. There m(..) is the fitted model's cell mean, and only settings that were run are averaged over:

- a main effect "a: a1 vs a0" is the mean of m(a1, s) - m(a0, s) over the settings s of the other factors at which
  both a1 and a0 were run (over the whole grid, predicted by the model, when there is none). In an additive model
  the difference is the same at every s, so this is the number the additive fit gave before any interaction was
  kept. In a star crossed with a grid: a star factor's effect at the base of the other star factors, averaged over
  the crossed factors' levels; a crossed factor's effect averaged over the star's cells (and the other crossed
  factors' levels). Not the mean over the whole grid: that would extrapolate to cells never run (optimizer sgd
  with plain structure, ste, plain weight and relu at once) from the two-way terms alone;
- an interaction a x b is read at the other factors' base (a star's base, any other factor's reference level):
  m(a1, b1) - m(a0, b1) - m(a1, b0) + m(a0, b0) there. Without three-way terms the model gives it the same value at
  every setting of the other factors; at a star's base the four cells are runs, and in a star crossed with a grid,
  where the model is saturated in the cells, it is the difference of differences of the runs' cell means.

What else a selection's runs can estimate, each with one note saying why there is no more:
one factor (its effects, paired by seed); a one-factor-at-a-time star alone (``sweeps=bireal_conclusions``: each
factor vs the base, a main-effects-only model: no two factors vary together); another incomplete grid (its missing
combinations named; main effects and the estimable two-way terms, when the main-effects design matrix has full
rank); fewer than 2 complete blocks or no residual degrees of freedom (estimates without an interval). A design
that is not a full factorial names the two-way interactions it cannot estimate and why
(:func:`onebit.results.designs.not_estimable_note`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from onebit.core.registry import DEFAULT_METRIC, METRICS
from onebit.records.record import RunRecord
from onebit.results.cells import group_cells, label_items, label_keys, metric, seed_label
from onebit.results.designs import (FACTORIAL, INCOMPLETE, NOTHING, SINGLE, STAR, STAR_CROSSED, classify,
                                    design_note, estimable_pairs, not_estimable_note, run_settings)
from onebit.results.paired import round_p, rounded
from onebit.results.registry import paper_tables
from onebit.results.select import Selection, Table, table_name
from onebit.results.stats import ALPHA, INCONCLUSIVE, LEVEL, holm, interval_text

POSITIVE, NEGATIVE = "positive", "negative"
MAIN, INTERACTION = "main", "interaction"
TITLE = ("Effects and interactions, {label} ({metric}, {unit}): OLS with the seed as a block, 95 % interval, "
         "p Holm-adjusted across the {n} effects of this fit")
ANOVA_TITLE = "Analysis of variance of the same fit, {label} (type II sums of squares, statsmodels anova_lm)"
COLUMNS = ("effect", "kind", "estimate", "low", "high", "p", "p_holm", "verdict")


# ----------------------------------------------------------------------------------------------------------
# Levels and their order
# ----------------------------------------------------------------------------------------------------------


def natural_order(values) -> list[str]:
    """Levels as text, numbers in numeric order before other text in alphabetical order."""
    def key(v):
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)
    return sorted({str(v) for v in values}, key=key)


def conclusion_sides(factor: str) -> list[tuple[str, str]]:
    """(better, worse) of every registered paper table's conclusion on ``factor`` (its option, or a config key
    ending in it: ``model.downsample``)."""
    return [(str(c[2]).lower(), str(c[3]).lower()) for t in paper_tables().values() for c in t.conclusions
            if factor == c[1] or factor.endswith("." + c[1])]


def order_levels(factor: str, values) -> tuple[list[str], bool]:
    """(levels with the reference first, whether a paper's conclusion chose it): the worse option of a conclusion
    whose two options are both levels (and never the better one of another), else the first in
    :func:`natural_order` (:func:`fit` makes a star's base level the reference of a factor no conclusion
    orients)."""
    levels = natural_order(values)
    lower = {lv.lower(): lv for lv in levels}
    sides = [(b, w) for b, w in conclusion_sides(factor) if b in lower and w in lower]
    worse = [lower[w] for _, w in sides if all(w != b for b, _ in sides)]
    ref = min(worse, key=levels.index) if worse else levels[0]
    return [ref] + [lv for lv in levels if lv != ref], bool(worse)


# ----------------------------------------------------------------------------------------------------------
# The fit
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Effects:
    """What one selection's runs estimate: the design, the effects (one row per contrast: :data:`COLUMNS`,
    unrounded), the notes that say what was left out and why, and the fitted statsmodels model
    (None when nothing could be fitted). ``levels`` lists each factor's levels, the reference first; ``pairs`` the
    two-way interactions in the model (every pair for a full factorial, the estimable ones for another design)."""

    design: str
    factors: list
    levels: dict
    frame: pd.DataFrame
    notes: list = field(default_factory=list)
    result: object = None
    blocks: list = field(default_factory=list)
    interval: bool = False
    name: str = "effects"
    label: str = ""
    metric: str = DEFAULT_METRIC
    pairs: list = field(default_factory=list)

    def _rows(self, where: Sequence[dict]) -> np.ndarray:
        """The model's design rows averaged over the grid (every factor level x every block) within each
        ``where`` (factor -> level): a row L with L beta = the mean of the model's cell means there."""
        grid = pd.DataFrame(list(itertools.product(*self.levels.values(), self.blocks)),
                            columns=[*_safe(self.factors), "block"])
        x = patsy.build_design_matrices([self.result.model.data.model_spec], grid, return_type="dataframe")[0]
        column = dict(zip(self.factors, _safe(self.factors)))
        out = []
        for w in where:
            mask = np.ones(len(grid), dtype=bool)
            for f, level in w.items():
                mask &= (grid[column[f]] == level).to_numpy()
            out.append(x[mask].to_numpy().mean(axis=0))
        return np.array(out)

    def means(self, factors: Sequence[str]) -> pd.DataFrame:
        """The model's means (points) at every combination of ``factors``' levels, averaged over the other factors
        and the blocks, with their 95 % interval (NaN without one): columns the factors, mean, low, high."""
        combos = [dict(zip(factors, c)) for c in itertools.product(*(self.levels[f] for f in factors))]
        if self.result is None:
            return pd.DataFrame(columns=[*factors, "mean", "low", "high"])
        mean, low, high, _ = _contrasts(self.result, self._rows(combos), self.interval)
        return pd.DataFrame([{**c, "mean": m, "low": lo, "high": hi} for c, m, lo, hi in zip(combos, mean, low, high)])

    @property
    def unit(self) -> str:
        return "points" if self.metric in METRICS else "metric units"

    @property
    def title(self) -> str:
        n = int(self.frame["estimate"].notna().sum())
        if not n:
            return f"Effects and interactions, {self.label} ({self.metric}): nothing estimable (see the notes)"
        return TITLE.format(label=self.label, metric=self.metric, unit=self.unit, n=n)

    def tables(self) -> list[Table]:
        """The effects table (rounded for print) and, when there is an interval, the ANOVA table."""
        f, unit = self.frame, self.unit
        frame = pd.DataFrame({"effect": f["effect"], "kind": f["kind"],
                              f"estimate ({unit})": f["estimate"].map(rounded),
                              "95% CI": [interval_text(lo, hi) for lo, hi in zip(f["low"], f["high"])],
                              "p (Holm)": f["p_holm"].map(round_p), "verdict": f["verdict"]})
        out = [Table(self.name, self.title, frame, list(self.notes))]
        if self.interval:
            out.append(Table(f"{self.name}-anova", ANOVA_TITLE.format(label=self.label),
                             _anova(self.result, self.factors)))
        return out


def _safe(factors: Sequence[str]) -> list[str]:
    """Formula-safe column names for the factors (a factor may be a dotted config key)."""
    return [f"f{i}" for i in range(len(factors))]


def _contrasts(result, L: np.ndarray, interval: bool):
    """(estimate, low, high, p) of each row of L: L beta, its 95 % t-interval and two-sided p
    (``results.t_test``); NaN interval and p without one."""
    estimate = L @ np.asarray(result.params)
    if not interval:
        nan = np.full(len(L), math.nan)
        return estimate, nan, nan, nan
    test = result.t_test(L)
    ci = np.atleast_2d(test.conf_int(alpha=1 - LEVEL))
    return estimate, ci[:, 0], ci[:, 1], np.atleast_1d(test.pvalue).astype(float)


def fit(data: pd.DataFrame, factors: Sequence[str], levels: dict | None = None, oriented: Sequence[str] = ()
        ) -> Effects:
    """The effects of ``factors`` on ``data`` (one row per run: a column per factor, ``seed``, ``y`` in points).
    ``levels``: each factor's levels, reference first (default: :func:`natural_order`); the reference of a factor
    not in ``oriented`` becomes a star's base level. See the module docstring for the model and the contrasts."""
    factors = list(factors)
    data = data.assign(**{f: data[f].astype(str) for f in factors}, seed=data["seed"].astype(str))
    levels = {f: list(levels[f]) if levels and f in levels else natural_order(data[f]) for f in factors}
    notes: list[str] = []
    if not factors:
        return _nothing(factors, levels, ["nothing to estimate: a single cell, no factor varies"])
    cell_seeds = data.groupby(factors, sort=False)["seed"].agg(set)
    blocks = natural_order(set.intersection(*cell_seeds))
    left = data[~data["seed"].isin(blocks)]
    if len(left):
        notes.append(f"left out {len(left)} run(s) of seed(s) {', '.join(natural_order(left['seed']))}: not in "
                     f"every cell (only complete blocks enter)")
    data = data[data["seed"].isin(blocks)]
    if not blocks:
        return _nothing(factors, levels, notes + ["nothing to estimate: no seed has runs in every cell"])
    cells = [tuple(c) if isinstance(c, tuple) else (c,) for c in cell_seeds.index]
    design = classify(cells, [levels[f] for f in factors])
    pairs = list(itertools.combinations(factors, 2)) if design.name == FACTORIAL else []
    base = dict(zip([factors[i] for i in design.star], design.base))
    levels = {f: [base[f]] + [lv for lv in levels[f] if lv != base[f]] if f in base and f not in oriented
              else levels[f] for f in factors}
    if design.name == SINGLE:
        notes.append("no interaction: only one factor varies")
    elif design.name == STAR:
        notes.append(f"interactions not estimable: one factor at a time, no two factors vary together (base: "
                     f"{', '.join(f'{f}={b}' for f, b in base.items())})")
    terms = " + ".join(f"C({s})" for s in _safe(factors))
    formula = f"y ~ ({terms})**2 + C(block)" if pairs else f"y ~ {terms} + C(block)"
    frame = data.rename(columns=dict(zip(factors, _safe(factors)))).rename(columns={"seed": "block"})
    model = smf.ols(formula, frame)
    rank = np.linalg.matrix_rank(model.exog)
    if rank < model.exog.shape[1]:
        why = (f"nothing estimable: the main-effects design matrix has rank {rank} < {model.exog.shape[1]} "
               f"parameters (some factors change together in every run)")
        return _nothing(factors, levels, [*notes, why], design.name)
    anchor = None
    if design.name in (STAR_CROSSED, INCOMPLETE):
        pairs, anchor = _hierarchical(design, factors, levels, base, cells, frame, notes)
        if pairs:
            safe = dict(zip(factors, _safe(factors)))
            model = smf.ols(formula + "".join(f" + C({safe[a]}):C({safe[b]})" for a, b in pairs), frame)
    result = model.fit()
    interval = len(blocks) >= 2 and result.df_resid > 0
    if not interval:
        why = (f"fewer than 2 complete blocks ({len(blocks)})" if len(blocks) < 2 else "no residual degrees of freedom")
        notes.append(f"no interval and no p: {why}; estimates only")
    if interval:
        notes.append(f"verdict: {POSITIVE} / {NEGATIVE} when the Holm-adjusted p < {ALPHA} (the estimate's sign), "
                     f"else {INCONCLUSIVE}; the 95 % intervals are not adjusted")
    eff = Effects(design.name, factors, levels, pd.DataFrame(columns=COLUMNS), notes, result, blocks, interval,
                  pairs=pairs)
    eff.frame = _effect_rows(eff, pairs, anchor, cells)
    terms_text = " + ".join(factors) + (" + their two-way interactions" if design.name == FACTORIAL else
                                        f" + {len(pairs)} estimable two-way interaction(s)" if pairs else "")
    notes.insert(0, f"model: y = mu + {terms_text} + seed block + e (OLS, statsmodels); {design.name}; "
                    f"{len(blocks)} complete block(s), {len(data)} runs, {int(result.df_resid)} residual df")
    return eff


def _hierarchical(design, factors, levels, base, cells, frame, notes) -> tuple[list, dict]:
    """(the two-way pairs the runs estimate, the levels the interactions are read at: a star's base, else each
    factor's reference) of a design that is neither a full factorial nor a star alone
    (:func:`onebit.results.designs.estimable_pairs`), with its notes: the design, the interactions left out and
    why, and what the estimates mean here (see the module docstring)."""
    kept, dropped = estimable_pairs(frame, _safe(factors))
    pairs = [(factors[i], factors[j]) for i, j in kept]
    notes.append(design_note(design, factors, (f"main effects and the {len(pairs)} estimable two-way "
                                               f"interaction(s)" if pairs else "main effects only, an additive model")))
    why = not_estimable_note(cells, factors, [levels[f] for f in factors], dropped)
    notes += [why] if why else []
    anchor = {f: base.get(f, levels[f][0]) for f in factors}
    if pairs:
        notes.append(f"not a full grid: a main effect is the mean of the fitted differences over the settings of the "
                     f"other factors where both levels were run; an interaction is read with the other factors at "
                     f"{', '.join(f'{f}={v}' for f, v in anchor.items())} (without three-way terms the same at "
                     f"any other setting)")
    return pairs, anchor


def _nothing(factors, levels, notes, design: str = NOTHING) -> Effects:
    rows = [{"effect": f"{f}: {lv} vs {levels[f][0]}", "kind": MAIN, "estimate": math.nan, "low": math.nan,
             "high": math.nan, "p": math.nan, "p_holm": math.nan, "verdict": "not estimable"}
            for f in factors for lv in levels[f][1:]]
    if not rows:
        rows = [{"effect": "none", "kind": "", **dict.fromkeys(COLUMNS[2:7], math.nan), "verdict": "not estimable"}]
    return Effects(design, list(factors), levels, pd.DataFrame(rows, columns=COLUMNS), notes)


def _effect_rows(eff: Effects, pairs: Sequence[tuple[str, str]], anchor: dict | None = None, cells=()
                 ) -> pd.DataFrame:
    """One row per main-effect contrast (each level vs the reference) and per two-way interaction contrast of
    ``pairs``, averaged over the whole grid of the other factors or, with an ``anchor`` (a design that is not a full
    factorial), a main effect over the ``cells`` run at both levels and an interaction read with the other factors
    at ``anchor``'s levels; Holm across all of them; the verdict from the adjusted p and the estimate's sign."""
    names, kinds, where, signs = [], [], [], []
    for i, f in enumerate(eff.factors):
        ref = eff.levels[f][0]
        for lv in eff.levels[f][1:]:
            names.append(f"{f}: {lv} vs {ref}")
            kinds.append(MAIN)
            run = run_settings(cells, i, lv, ref) if anchor is not None else []
            cases = [dict(zip(eff.factors, c)) for c in run] or [{}]    # no run setting: the whole grid
            where += [w for c in cases for w in ({**c, f: lv}, {**c, f: ref})]
            signs.append((1 / len(cases), -1 / len(cases)) * len(cases))
    for a, b in pairs:
        a0, b0 = eff.levels[a][0], eff.levels[b][0]
        at = {f: v for f, v in (anchor or {}).items() if f not in (a, b)}
        for a1, b1 in itertools.product(eff.levels[a][1:], eff.levels[b][1:]):
            names.append(f"{a} ({a1} vs {a0}) x {b} ({b1} vs {b0})")
            kinds.append(INTERACTION)
            where += [{**at, a: a1, b: b1}, {**at, a: a0, b: b1}, {**at, a: a1, b: b0}, {**at, a: a0, b: b0}]
            signs.append((1, -1, -1, 1))
    rows = eff._rows(where)
    L, i = [], 0
    for s in signs:
        L.append(sum(w * r for w, r in zip(s, rows[i:i + len(s)])))
        i += len(s)
    estimate, low, high, p = _contrasts(eff.result, np.array(L), eff.interval)
    adjusted = holm(p, ALPHA)
    verdicts = [INCONCLUSIVE if not q < ALPHA else POSITIVE if e > 0 else NEGATIVE for e, q in zip(estimate, adjusted)]
    return pd.DataFrame({"effect": names, "kind": kinds, "estimate": estimate, "low": low, "high": high, "p": p,
                         "p_holm": adjusted, "verdict": verdicts}, columns=COLUMNS)


def _anova(result, factors: Sequence[str]) -> pd.DataFrame:
    """One row per model term (type II sums of squares): term, df, F and p."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(result, typ=2)
    names = {f"C({s})": f for s, f in zip(_safe(factors), factors)}

    def term(t: str) -> str:
        if t == "C(block)":
            return "seed (block)"
        return "residual" if t == "Residual" else " x ".join(names.get(p, p) for p in t.split(":"))
    return pd.DataFrame({"term": [term(t) for t in table.index], "df": table["df"].astype(int).to_numpy(),
                         "F": [rounded(float(x)) for x in table["F"]],
                         "p": [round_p(float(x)) for x in table["PR(>F)"]]})


# ----------------------------------------------------------------------------------------------------------
# From records
# ----------------------------------------------------------------------------------------------------------


def design_data(records: Sequence[RunRecord], metric_name: str = DEFAULT_METRIC) -> tuple[pd.DataFrame, list, list]:
    """(one row per finished run with the metric on its final stage: the factors' levels, ``seed``, ``y`` (x 100
    for an accuracy), the factors (:func:`onebit.results.cells.label_keys` of those runs' cells), notes)."""
    done = [r for r in records if r.status == "finished" and metric(r, metric_name) is not None]
    notes = []
    if len(done) < len(records):
        notes.append(f"left out {len(records) - len(done)} run(s) not finished or without {metric_name} on their "
                     f"final stage")
    cells = group_cells(done)
    items = {key: label_items(recs) for key, recs in cells.items()}
    factors = label_keys(list(items.values())) if len(cells) > 1 else []
    scale = 100.0 if metric_name in METRICS else 1.0
    rows = [{**{f: str(items[key].get(f)) for f in factors}, "seed": str(seed_label(r)),
             "y": scale * metric(r, metric_name)} for key, recs in cells.items() for r in recs]
    return pd.DataFrame(rows, columns=[*factors, "seed", "y"]), factors, notes


def effects(sel: Selection, metric_name: str = DEFAULT_METRIC) -> Effects:
    """The effects of one selection (:func:`fit` of :func:`design_data`), titled and named ``effects-<study>``."""
    data, factors, notes = design_data(sel.records, metric_name)
    if data.empty:
        eff = _nothing([], {}, ["nothing to estimate: no finished run has the metric"])
    else:
        ordered = {f: order_levels(f, data[f].unique()) for f in factors}
        eff = fit(data, factors, {f: lv for f, (lv, _) in ordered.items()}, [f for f, (_, o) in ordered.items() if o])
    eff.notes = list(sel.notes) + notes + eff.notes
    eff.name, eff.label, eff.metric = table_name("effects", sel, home=()), sel.label, metric_name
    return eff


def tables(sel: Selection, metric_name: str = DEFAULT_METRIC) -> list[Table]:
    """The effects table (and its ANOVA) of one selection; [] without records."""
    if not sel.records:
        return []
    return effects(sel, metric_name).tables()
