"""Which design a study's cells form, and which two-way interactions its runs can estimate (for
:mod:`onebit.results.effects`).

A cell is a tuple of levels (as text), one per factor. :func:`classify` names the design:

- full factorial: every combination of the factors' levels has runs;
- one factor at a time (a star): one base cell, and every other cell differs from it in exactly one factor
  (``sweeps=bireal_conclusions``);
- a star crossed with a grid: the factors split into the star's and the crossed ones, and the cells are (a star over
  the first) x (every combination of the crossed factors' levels), that is: every cell has a twin at each level of a
  crossed factor (the committed example: structure / sign / weight / pretrain one at a time around the base, each
  cell under both optimizers);
- an incomplete grid: anything else (the combinations without runs listed).

For a design that is not a full factorial :func:`estimable_pairs` finds the largest hierarchical model its runs can
estimate: the intercept, all main effects and the seed block, then each two-way interaction term in a fixed order
(the factors' order, pairs as :func:`itertools.combinations` yields them), kept when its columns raise the rank of
the design matrix X by their number, else dropped whole. The kept model has full column rank, so every parameter and
every linear combination L beta of them (any contrast of the model's cell means) is estimable: L beta is estimable
iff L lies in the row space of X (Searle, *Linear Models*, 1971, ch. 5, estimable functions), which is all of R^p
when rank X = p. Of two terms confounded with each other the earlier one is kept; in a star crossed with a grid no
two estimable terms compete, so there the order does not matter. :func:`not_estimable_note` says why each dropped
pair is out: no two of its levels vary together in the runs (every run has one of the pair at a fixed level: a
one-factor-at-a-time pair), combinations of its levels without runs, or confounding with the terms before it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy

FACTORIAL, SINGLE, STAR, STAR_CROSSED, INCOMPLETE, NOTHING = (
    "full factorial", "one factor", "one factor at a time", "one factor at a time x full grid", "incomplete grid",
    "nothing to estimate")
SHOW_MISSING = 3        # missing combinations named in a note


@dataclass
class Design:
    """A design's name, for a star the factors it varies one at a time (``star``, indices) around its ``base``
    (their levels, in the same order), the ``crossed`` factors (indices) and the combinations of all factors'
    levels without runs (``missing``)."""

    name: str
    star: list = field(default_factory=list)
    base: tuple = ()
    crossed: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def star_base(cells: Sequence[tuple]) -> tuple | None:
    """The base of a one-factor-at-a-time star: the one cell that every other cell differs from in exactly one
    factor (None when no cell, or more than one, is such a base)."""
    bases = [c for c in cells if all(sum(a != b for a, b in zip(c, o)) == 1 for o in cells if o != c)]
    return bases[0] if len(bases) == 1 else None


def crossed(cells: Sequence[tuple], levels: Sequence[Sequence[str]]) -> list[int]:
    """The factors (indices) crossed with the rest: every cell with its level changed to any other has runs too."""
    present = set(cells)
    return [i for i, lv in enumerate(levels) if all(c[:i] + (v,) + c[i + 1:] in present for c in present for v in lv)]


def classify(cells: Sequence[tuple], levels: Sequence[Sequence[str]]) -> Design:
    """The design of ``cells`` over factors with ``levels`` (each factor's levels; see the module docstring)."""
    present, n = set(cells), len(levels)
    if n == 1:
        return Design(SINGLE)
    if len(present) == math.prod(len(lv) for lv in levels):
        return Design(FACTORIAL, crossed=list(range(n)))
    if (base := star_base(list(present))) is not None:
        return Design(STAR, list(range(n)), base)
    cross = crossed(list(present), levels)
    star = [i for i in range(n) if i not in cross]
    if cross and len(star) >= 2 and (base := star_base(list({tuple(c[i] for i in star) for c in present}))):
        return Design(STAR_CROSSED, star, base, cross)
    return Design(INCOMPLETE, missing=[c for c in itertools.product(*levels) if c not in present])


def design_note(design: Design, factors: Sequence[str], what: str) -> str:
    """The note on a design that is neither a full factorial nor a star alone, ending in ``what`` the model fits:
    a star crossed with a grid (its base and the crossed factors), else the combinations without runs."""
    if design.name == STAR_CROSSED:
        base = ", ".join(f"{factors[i]}={b}" for i, b in zip(design.star, design.base))
        return (f"one factor at a time in {', '.join(factors[i] for i in design.star)} (base: {base}), crossed with "
                f"every level of {', '.join(factors[i] for i in design.crossed)}: {what}")
    named = "; ".join(", ".join(f"{f}={v}" for f, v in zip(factors, c)) for c in design.missing[:SHOW_MISSING])
    more = f" and {len(design.missing) - SHOW_MISSING} more" if len(design.missing) > SHOW_MISSING else ""
    return f"not a full grid (no runs of {named}{more}): {what}"


def estimable_pairs(data: pd.DataFrame, columns: Sequence[str], block: str = "block"
                    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(kept, dropped): the pairs (i, j) of ``columns`` (categorical, in ``data`` with ``block``) whose two-way
    interaction term joins the model, in order, because its columns raise the rank of the design matrix of
    ``C(a) + C(b) + .. + C(block)`` plus the terms kept before it by their number (numpy.linalg.matrix_rank on
    patsy's matrix of ``(C(a) + C(b) + ..)**2 + C(block)``, whose interaction columns, with every main effect in
    the formula, are coded as they are in a model with only the kept ones)."""
    terms = " + ".join(f"C({c})" for c in columns)
    x = patsy.dmatrix(f"({terms})**2 + C({block})", data, return_type="dataframe")
    slices, array = x.design_info.term_name_slices, x.to_numpy()
    pairs = {f"C({columns[i]}):C({columns[j]})": (i, j) for i, j in itertools.combinations(range(len(columns)), 2)}
    cols = [k for name, s in slices.items() if name not in pairs for k in range(s.start, s.stop)]
    rank = np.linalg.matrix_rank(array[:, cols])
    kept, dropped = [], []
    for name, pair in pairs.items():
        s = slices[name]
        grown = np.linalg.matrix_rank(array[:, cols + list(range(s.start, s.stop))])
        if grown == rank + s.stop - s.start:
            kept.append(pair)
            cols, rank = cols + list(range(s.start, s.stop)), grown
        else:
            dropped.append(pair)
    return kept, dropped


def run_settings(cells: Sequence[tuple], i: int, a1: str, a0: str) -> list[tuple]:
    """The cells (sorted) with factor i at ``a1`` whose twin at ``a0`` (the same but factor i) has runs too: the
    settings of the other factors at which both levels were run."""
    present = set(cells)
    return sorted(c for c in present if c[i] == a1 and c[:i] + (a0,) + c[i + 1:] in present)


def why_not(cells: Sequence[tuple], levels: Sequence[Sequence[str]], i: int, j: int) -> tuple[str, object]:
    """Why the pair (i, j) may not be estimable: ("together", (u, v)) when every cell has factor i at u or factor
    j at v (no two of their levels vary together), ("missing", [(u, v), ..]) for the combinations of their levels
    without runs, else ("confounded", None)."""
    seen = {(c[i], c[j]) for c in cells}
    for u, v in itertools.product(levels[i], levels[j]):
        if all(a == u or b == v for a, b in seen):
            return "together", (u, v)
    missing = [(u, v) for u, v in itertools.product(levels[i], levels[j]) if (u, v) not in seen]
    return ("missing", missing) if missing else ("confounded", None)


def not_estimable_note(cells: Sequence[tuple], factors: Sequence[str], levels: Sequence[Sequence[str]],
                       dropped: Sequence[tuple[int, int]]) -> str | None:
    """One note naming the two-way interactions left out of the model and why (:func:`why_not`); None when none
    is."""
    if not dropped:
        return None
    together, other, confounded = [], [], []
    for i, j in dropped:
        kind, what = why_not(cells, levels, i, j)
        a, b = factors[i], factors[j]
        if kind == "together":
            together.append((i, j, what))
        elif kind == "missing":
            named = "; ".join(f"{a}={u} with {b}={v}" for u, v in what[:SHOW_MISSING])
            more = f" and {len(what) - SHOW_MISSING} more" if len(what) > SHOW_MISSING else ""
            other.append(f"{a} x {b} (no runs of {named}{more})")
        else:
            confounded.append(f"{a} x {b}")
    if confounded:
        other.append(f"{', '.join(confounded)} (every combination of the pair's levels was run, but the term is "
                     f"confounded with the main effects, the seed blocks and the interactions kept before it)")
    parts = []
    if together:
        fixed = {}
        for i, j, (u, v) in together:
            fixed.setdefault(i, set()).add(u)
            fixed.setdefault(j, set()).add(v)
        if all(len(v) == 1 for v in fixed.values()):
            at = ", ".join(f"{factors[k]}={next(iter(fixed[k]))}" for k in sorted(fixed))
            why = f"every run has one of each pair at its base: {at}"
        else:
            why = "; ".join(f"every run has {factors[i]}={u} or {factors[j]}={v}" for i, j, (u, v) in together)
        pairs = ", ".join(f"{factors[i]} x {factors[j]}" for i, j, _ in together)
        parts.append(f"{pairs} (no two of their levels vary together in the runs: {why})")
    return ("interactions not estimable (a two-way term enters only when its columns raise the design matrix's "
            "rank by their number): " + "; ".join(parts + other))
