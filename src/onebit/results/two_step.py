"""Bi-Real's two-step scheme (IJCV 2020) against one-step training, from our runs (``sweeps=bireal_two_step``).

Layout: one row per model (Bi-Real-18/34/50 in the sweep); columns the one-step cell and the two-step cell
(mean ± std over seeds (n) of the final stage), then the paired difference ``d_i = 100 (two-step_i - one-step_i)``
over runs identical except for ``recipe`` with the same seed: its mean, 95 % interval, P(two-step > one-step), the
Holm-adjusted p and the verdict (``onebit.results.stats``: supported / contradicted / inconclusive). The IJCV paper
reports the scheme for its deep nets without a one-step ablation that this table could be set beside (its text
was not available here): there is no paper column.

Budget: ``two_step`` trains ``recipe.step1_epochs`` (default ``epochs``) with binary activations and real weights,
then ``epochs`` fully binary, so it spends more epochs than ``one_step``; the title says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from onebit.core.registry import DEFAULT_METRIC
from onebit.records.identity import cell_items
from onebit.records.record import RunRecord
from onebit.results import paired
from onebit.results.cells import format_cell, summarize
from onebit.results.cells import recipe_name as recipe
from onebit.results.load import NoRunsError
from onebit.results.registry import PaperTable, register
from onebit.results.select import Selection, Table, paper_tables

NAME = "bireal_two_step"
AXES = {"recipe": ("one_step", "two_step"), "model": ("bireal18", "bireal34", "bireal50")}  # sweeps/bireal_two_step
RECIPES = AXES["recipe"]
TITLE = ("Bi-Real two-step scheme vs one-step training, {label} ({metric}, %): mean ± std over seeds (n); two-step "
         "= binary activations with real weights, then fully binary from those weights (ReActNet's step1/step2), "
         "each step its own epochs")
CONCLUSIONS_TITLE = ("Two-step minus one-step, {label} (paired differences over runs identical except for the "
                     "recipe, same seed; points; 95 % t-intervals over pairs; p and verdicts Holm-adjusted over the "
                     "models, alpha 0.05)")


def position(rec: RunRecord) -> tuple | None:
    """(model option, recipe) of a binary run, or None for a real-valued model."""
    if rec.options.get("sign") is None or recipe(rec) not in RECIPES:
        return None
    return (rec.options.get("model"), recipe(rec))


def placements(rec: RunRecord):
    if (pos := position(rec)) is not None:
        yield pos, cell_items(rec.config)


def table(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    found: dict[tuple, list] = {}
    for rec in records:
        if (pos := position(rec)) is not None:
            found.setdefault(pos, []).append(rec)
    if not found:
        raise NoRunsError("no runs for the two-step table (recipe one_step|two_step)")
    models = sorted({m for m, _ in found}, key=lambda m: (len(str(m)), str(m)))
    rows = []
    for model in models:
        row = {"model": model}
        for r in RECIPES:
            recs = found.get((model, r))
            row[r.replace("_", "-")] = format_cell(summarize(recs, metric) if recs else None)
        rows.append(row)
    return pd.DataFrame(rows)


def conclusions(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per model: the paired difference two-step - one-step (``onebit.results.paired``) with its statistics
    (``onebit.results.stats``; p and verdicts Holm-adjusted over the models)."""
    by_model: dict = {}
    for rec in records:
        if (pos := position(rec)) is not None:
            by_model.setdefault(pos[0], []).append(rec)
    models = sorted(by_model, key=lambda m: (len(str(m)), str(m)))
    found = [paired.pairs(by_model[m], "recipe", "two_step", "one_step", metric) for m in models]
    names = [f"{m}: two-step > one-step" for m in models]
    inside = [r for m in models for r in by_model[m]]
    tested = paired.comparisons(found, records=inside, names=names)
    rows = []
    for model, c in zip(models, tested):
        cols = paired.columns(c)
        rows.append({"model": model, "two-step - one-step (points)": cols.pop("ours (points)"), **cols,
                     "verdict": c.verdict})
    frame = pd.DataFrame(rows)
    frame.attrs["notes"] = paired.design_notes(inside, names, tested) + paired.power_notes(names, tested)
    return frame


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    """The two-step table and its paired differences, when the selection has two-step runs; else []."""
    records = [r for r in sel.records if position(r) is not None]
    if not any(recipe(r) == "two_step" for r in records):
        return []
    return paper_tables(sel, records, placements, NAME, (TITLE, CONCLUSIONS_TITLE), table, conclusions, metric)


def in_table(rec: RunRecord) -> bool:
    return position(rec) is not None and recipe(rec) == "two_step"


TABLE = register(PaperTable("two_step", "the two-step table", NAME, AXES, tables, in_table,
                            (("two-step > one-step", "recipe", "two_step", "one_step"),), order=2))
