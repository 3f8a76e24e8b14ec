"""What BNN researchers reach for after Bi-Real, one factor at a time (``sweeps=distillation``): distillation from
a real-valued teacher, a learnable activation threshold, the two-step scheme, and Bop instead of latent weights.

Design: the base is Bi-Real-18 trained the way ReActNet's authors train it (``recipe=two_step`` with the run's own
pretrained twin as teacher, ``distill=twin``; ReActNet's learnable threshold, ``sign.learnable_threshold=true``;
Adam on latent weights, ``protocol=official_adam``), then the base with exactly one of four things changed. Each
conclusion is the paired difference over runs identical except for that one thing, with the same seed
(``onebit.results.paired``; 95 % t-interval, P(better > worse), Holm-adjusted p, verdict, ``onebit.results.stats``):

- ``distillation > none``: ``distill=twin`` vs ``distill=none`` (ReActNet Eq. 4, Liu et al. ECCV 2020);
- ``learnable threshold > fixed``: ``sign.learnable_threshold=true`` vs ``false`` (ReActNet's RSign, Eq. 1-2);
- ``two-step > one-step``: ``recipe=two_step`` vs ``recipe=one_step`` (both distilled from the twin);
- ``Bop > latent weights``: ``optimizer=bop`` vs Adam on latent weights (Helwegen et al. NeurIPS 2019): the
  claim is written "Bop > latent weights" so that its sign reads as a direction; a negative difference whose
  interval lies below 0 is ``contradicted`` (latent weights better).

Layout: one row per cell (the base, then each change), mean ± std over seeds (n) of the final stage, and the
conclusions table. The paper column: the papers report these ablations on ImageNet with other bases (ReActNet's
Table 5 and Fig. 6 on ReActNet-A/Bi-Real, Helwegen et al.'s Table 1 on BinaryNet / CIFAR-10), whose numbers could not
be checked against the papers' text here, so it is empty and its note says so, rather than a number nobody verified.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from onebit.core.registry import DEFAULT_METRIC
from onebit.records.identity import cell_items
from onebit.records.record import RunRecord
from onebit.results import paired
from onebit.results.cells import by_position, format_cell, option_value, summarize
from onebit.results.load import NoRunsError
from onebit.results.registry import PaperTable, register
from onebit.results.select import Selection, Table, paper_tables

NAME = "distillation"
# the one-factor design of sweeps/distillation.yaml (${onebit_design:distillation,base|factors,<key>}), as override
# values; protocol=official_adam (Adam on latent weights, the arm Bop is compared with) is the sweep file's
BASE = {"model": "bireal18", "recipe": "two_step", "distill": "twin", "sign.learnable_threshold": "true",
        "optimizer": "adam"}
FACTORS = {"distill": ["none"], "sign.learnable_threshold": ["false"], "recipe": ["one_step"], "optimizer": ["bop"]}
CONCLUSIONS = (
    # (name, option, better, worse): option as onebit.results.cells.option_value reads it
    ("distillation > none", "distill", "twin", "none"),
    ("learnable threshold > fixed", "learnable_threshold", True, False),
    ("two-step > one-step", "recipe", "two_step", "one_step"),
    ("Bop > latent weights", "optimizer", "bop", "adam"),
)
AT_BASE = {option: better if option != "optimizer" else worse for _, option, better, worse in CONCLUSIONS}


def _factor(rec: RunRecord, option: str):
    """A factor's value: ``recipe`` by the steps the run ran (``two_step`` with or without a teacher: the teacher is
    the ``distill`` factor), the others as ``onebit.results.cells.option_value`` reads them."""
    if option == "recipe":
        return (rec.config.get("recipe") or {}).get("name", "one_step")
    return option_value(rec, option)


ROWS = ("base", "distill=none", "learnable_threshold=false", "recipe=one_step", "optimizer=bop")
NO_PAPER = ("paper column empty: ReActNet (ECCV 2020) and Helwegen et al. (NeurIPS 2019) report these ablations on "
            "other bases and data sets, and their numbers could not be verified against the papers' text here")
TITLE = ("One factor at a time around Bi-Real-18 + two-step + distillation + learnable threshold, {label} ({metric}, "
         "%): mean ± std over seeds (n) of the final stage")
CONCLUSIONS_TITLE = ("Distillation, learnable threshold, two-step and Bop, {label} (paired differences over runs "
                     "identical except for that one change, same seed; points; 95 % t-intervals over pairs; p and "
                     "verdicts Holm-adjusted over the four conclusions, alpha 0.05)")


def position(rec: RunRecord) -> str | None:
    """``base``, or the one change from the base a run makes (``distill=none``, ...; :data:`ROWS`), or None for a
    run outside the design (a real-valued or non-Bi-Real-18 run, or one that changes two things)."""
    if rec.options.get("sign") is None or rec.options.get("model") != BASE["model"]:
        return None
    changed = [f"{option}={str(value).lower()}" for option, at_base in AT_BASE.items()
               if (value := _factor(rec, option)) != at_base]
    if not changed:
        return "base"
    return changed[0] if len(changed) == 1 and changed[0] in ROWS else None


def table(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    found = by_position(records, position)
    if not found:
        raise NoRunsError(f"no runs for the distillation table (python src/train.py -m sweeps={NAME})")
    return pd.DataFrame([{"cell": row, "ours": format_cell(summarize(found[row], metric) if row in found else None),
                          "paper": ""} for row in ROWS])


def conclusions(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Each conclusion from its pairs (``onebit.results.paired``), Holm-adjusted together."""
    inside = [r for r in records if position(r) is not None]
    found = [paired.pairs(inside, option, better, worse, metric) for _, option, better, worse in CONCLUSIONS]
    names = [c[0] for c in CONCLUSIONS]
    return paired.conclusions_frame(found, names, inside, notes=[NO_PAPER], row=lambda i, cols, c: {
        "conclusion": names[i], **cols, "paper (points)": "", "verdict": c.verdict})


def placements(rec: RunRecord):
    if (pos := position(rec)) is not None:
        yield pos, cell_items(rec.config)


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    records = [r for r in sel.records if position(r) is not None]
    if not records:
        return []
    return paper_tables(sel, records, placements, NAME, (TITLE, CONCLUSIONS_TITLE), table, conclusions, metric,
                        skip_empty_conclusions=True)


def in_table(rec: RunRecord) -> bool:
    return position(rec) is not None


def design() -> dict:
    """The one-factor design (``hydra/sweeper=one_factor``): the base and each factor's alternatives."""
    return {"base": dict(BASE), "factors": {k: list(v) for k, v in FACTORS.items()}}


TABLE = register(PaperTable("distillation", "the distillation table", NAME,
                            {k: (BASE[k], *FACTORS[k]) for k in FACTORS}, tables, in_table,
                            tuple(c[:4] for c in CONCLUSIONS), studies=(NAME,), order=4, design=design))
