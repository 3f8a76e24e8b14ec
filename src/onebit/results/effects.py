"""Main effects and two-way interactions of a study's options, from runs that form a full factorial grid.

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

What else a selection's runs can estimate, each with one note saying why there is no more:
one factor (its effects, paired by seed); a one-factor-at-a-time star (``sweeps=bireal_conclusions``: each factor vs
the base, a main-effects-only model); another incomplete grid (its missing combinations named; main effects only,
when the design matrix has full rank); fewer than 2 complete blocks or no residual degrees of freedom (estimates
without an interval).
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
from onebit.results.paired import round_p, rounded
from onebit.results.registry import paper_tables
from onebit.results.select import Selection, Table, table_name
from onebit.results.stats import ALPHA, INCONCLUSIVE, LEVEL, holm, interval_text

POSITIVE, NEGATIVE = "positive", "negative"
MAIN, INTERACTION = "main", "interaction"
FACTORIAL, SINGLE, STAR, INCOMPLETE, NOTHING = ("full factorial", "one factor", "one factor at a time",
                                                 "incomplete grid", "nothing to estimate")
SHOW_MISSING = 3        # missing combinations named in a note
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
    (None when nothing could be fitted). ``levels`` lists each factor's levels, the reference first."""

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


def star_base(cells: Sequence[tuple]) -> tuple | None:
    """The base of a one-factor-at-a-time star: the one cell that every other cell differs from in exactly one
    factor (None when no cell, or more than one, is such a base)."""
    bases = [c for c in cells if all(sum(a != b for a, b in zip(c, o)) == 1 for o in cells if o != c)]
    return bases[0] if len(bases) == 1 else None


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
    interactions = False
    if len(factors) == 1:
        design = SINGLE
        notes.append("no interaction: only one factor varies")
    elif len(cells) == math.prod(len(v) for v in levels.values()):
        design, interactions = FACTORIAL, True
    elif (base := star_base(cells)) is not None:
        design = STAR
        levels = {f: levels[f] if f in oriented else [base[i]] + [lv for lv in levels[f] if lv != base[i]]
                  for i, f in enumerate(factors)}
        notes.append(f"interactions not estimable: one factor at a time, no two factors vary together (base: "
                     f"{', '.join(f'{f}={b}' for f, b in zip(factors, base))})")
    else:
        design = INCOMPLETE
        present = set(cells)
        missing = [c for c in itertools.product(*levels.values()) if c not in present]
        named = "; ".join(", ".join(f"{f}={v}" for f, v in zip(factors, c)) for c in missing[:SHOW_MISSING])
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        notes.append(f"not a full grid (no runs of {named}{more}): main effects only, an additive model")
    terms = " + ".join(f"C({s})" for s in _safe(factors))
    formula = f"y ~ ({terms})**2 + C(block)" if interactions else f"y ~ {terms} + C(block)"
    frame = data.rename(columns=dict(zip(factors, _safe(factors)))).rename(columns={"seed": "block"})
    model = smf.ols(formula, frame)
    rank = np.linalg.matrix_rank(model.exog)
    if rank < model.exog.shape[1]:
        why = (f"nothing estimable: the main-effects design matrix has rank {rank} < {model.exog.shape[1]} "
               f"parameters (some factors change together in every run)")
        return _nothing(factors, levels, [*notes, why], design)
    result = model.fit()
    interval = len(blocks) >= 2 and result.df_resid > 0
    if not interval:
        why = (f"fewer than 2 complete blocks ({len(blocks)})" if len(blocks) < 2 else "no residual degrees of freedom")
        notes.append(f"no interval and no p: {why}; estimates only")
    if interval:
        notes.append(f"verdict: {POSITIVE} / {NEGATIVE} when the Holm-adjusted p < {ALPHA} (the estimate's sign), "
                     f"else {INCONCLUSIVE}; the 95 % intervals are not adjusted")
    eff = Effects(design, factors, levels, pd.DataFrame(columns=COLUMNS), notes, result, blocks, interval)
    eff.frame = _effect_rows(eff, interactions)
    terms_text = " + ".join(factors) + (" + their two-way interactions" if interactions else "")
    notes.insert(0, f"model: y = mu + {terms_text} + seed block + e (OLS, statsmodels); {design}; "
                    f"{len(blocks)} complete block(s), {len(data)} runs, {int(result.df_resid)} residual df")
    return eff


def _nothing(factors, levels, notes, design: str = NOTHING) -> Effects:
    rows = [{"effect": f"{f}: {lv} vs {levels[f][0]}", "kind": MAIN, "estimate": math.nan, "low": math.nan,
             "high": math.nan, "p": math.nan, "p_holm": math.nan, "verdict": "not estimable"}
            for f in factors for lv in levels[f][1:]]
    if not rows:
        rows = [{"effect": "none", "kind": "", **dict.fromkeys(COLUMNS[2:7], math.nan), "verdict": "not estimable"}]
    return Effects(design, list(factors), levels, pd.DataFrame(rows, columns=COLUMNS), notes)


def _effect_rows(eff: Effects, interactions: bool) -> pd.DataFrame:
    """One row per main-effect contrast (each level vs the reference) and, with ``interactions``, per two-way
    interaction contrast; Holm across all of them; the verdict from the adjusted p and the estimate's sign."""
    names, kinds, where, signs = [], [], [], []
    for f in eff.factors:
        ref = eff.levels[f][0]
        for lv in eff.levels[f][1:]:
            names.append(f"{f}: {lv} vs {ref}")
            kinds.append(MAIN)
            where += [{f: lv}, {f: ref}]
            signs.append((1, -1))
    if interactions:
        for a, b in itertools.combinations(eff.factors, 2):
            a0, b0 = eff.levels[a][0], eff.levels[b][0]
            for a1, b1 in itertools.product(eff.levels[a][1:], eff.levels[b][1:]):
                names.append(f"{a} ({a1} vs {a0}) x {b} ({b1} vs {b0})")
                kinds.append(INTERACTION)
                where += [{a: a1, b: b1}, {a: a0, b: b1}, {a: a1, b: b0}, {a: a0, b: b0}]
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
