"""Bi-Real's two-step scheme (IJCV 2020) against one-step training, from our runs (``sweeps=bireal_two_step``).

Layout: one row per model (Bi-Real-18/34/50 in the sweep); columns the one-step cell, the two-step cell as the
authors run it (``recipe=two_step``: distilled from a real-valued teacher, here the twin) and, when there are such
runs, the two-step cell without a teacher (``two_step_no_distill``: every ``recipe=two_step`` record from before
distillation, ``onebit.results.cells.recipe_name``), each mean ± std over seeds (n) of the final stage; then per
model and two-step variant the paired difference ``d_i = 100 (two-step_i - one-step_i)`` over runs identical
except for ``recipe`` (and the teacher it brings) with the same seed: its mean, 95 % interval, P(two-step >
one-step), the Holm-adjusted p and the verdict (``onebit.results.stats``: supported / contradicted /
inconclusive). The IJCV paper reports the scheme for its deep nets without a one-step ablation that this table
could be set beside (its text was not available here): there is no paper column.

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
from onebit.results.cells import by_position, format_cell, summarize
from onebit.results.cells import recipe_name as recipe
from onebit.results.load import NoRunsError
from onebit.results.registry import PaperTable, register
from onebit.results.select import Selection, Table, paper_tables

NAME = "bireal_two_step"
AXES = {"recipe": ("one_step", "two_step"), "model": ("bireal18", "bireal34", "bireal50")}  # sweeps/bireal_two_step
RECIPES = ("one_step", "two_step_no_distill", "two_step")  # the columns (a two-step one only when it has runs)
TWO_STEPS = {"two_step": "", "two_step_no_distill": " (no teacher)"}  # compared with one_step, each by its pairs
TITLE = ("Bi-Real two-step scheme vs one-step training, {label} ({metric}, %): mean ± std over seeds (n); two-step "
         "= binary activations with real weights, then fully binary from those weights (ReActNet's step1/step2), "
         "each step its own epochs, distilled from the real-valued twin (two-step-no-distill: without a teacher)")
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
    found = by_position(records, position)
    if not found:
        raise NoRunsError(f"no runs for the two-step table (recipe {'|'.join(RECIPES)})")
    models = sorted({m for m, _ in found}, key=lambda m: (len(str(m)), str(m)))
    ran = [r for r in RECIPES if r == "one_step" or any(pos[1] == r for pos in found)]  # a column per recipe run
    rows = []
    for model in models:
        row = {"model": model}
        for r in ran:
            recs = found.get((model, r))
            row[r.replace("_", "-")] = format_cell(summarize(recs, metric) if recs else None)
        rows.append(row)
    return pd.DataFrame(rows)


def conclusions(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per model and two-step variant that has runs (with the twin as teacher; ``(no teacher)``): the paired
    difference two-step - one-step (``onebit.results.paired``) with its statistics (``onebit.results.stats``; p and
    verdicts Holm-adjusted over the rows)."""
    by_model = by_position(records, lambda r: None if (pos := position(r)) is None else pos[0])
    models = sorted(by_model, key=lambda m: (len(str(m)), str(m)))
    ran = {recipe(r) for rs in by_model.values() for r in rs}
    rows_of = [(m, two) for m in models for two in TWO_STEPS if two in ran]
    found = [paired.pairs(by_model[m], "recipe", two, "one_step", metric) for m, two in rows_of]
    names = [f"{m}{TWO_STEPS[two]}: two-step > one-step" for m, two in rows_of]
    inside = [r for m in models for r in by_model[m]]

    def row(i: int, cols: dict, c) -> dict:
        model, two = rows_of[i]
        return {"model": f"{model}{TWO_STEPS[two]}", "two-step - one-step (points)": cols.pop("ours (points)"),
                **cols, "verdict": c.verdict}

    return paired.conclusions_frame(found, names, inside, row)


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    """The two-step table and its paired differences, when the selection has two-step runs; else []."""
    records = [r for r in sel.records if position(r) is not None]
    if not any(recipe(r) in TWO_STEPS for r in records):
        return []
    return paper_tables(sel, records, placements, NAME, (TITLE, CONCLUSIONS_TITLE), table, conclusions, metric)


def in_table(rec: RunRecord) -> bool:
    return position(rec) is not None and recipe(rec) in TWO_STEPS


TABLE = register(PaperTable("two_step", "the two-step table", NAME, AXES, tables, in_table,
                            (("two-step > one-step", "recipe", "two_step", "one_step"),), order=2))
