"""Bethge et al. 2018 ("Learning to train a binary neural network"), Tables 2-3: the from-scratch ResNetE-18
ablation, and its findings.

Layout: rows XNOR scaling (no = ``weight=plain``, yes = ``weight=xnor``) x 1x1 downsample conv
(``model.downsample``) x ApproxSign (yes = ``sign=approx``, no = ``sign=ste``), one column per dataset (the
``data`` option; per dataset and model when several models ran) with our cell, the paper's value (top-1, or top-5
for a top-5 metric) beside it for CIFAR-10 and ImageNet.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from onebit import paper
from onebit.core.registry import DEFAULT_METRIC
from onebit.records.identity import cell_items
from onebit.records.record import RunRecord
from onebit.results import paired
from onebit.results.cells import CellSummary, by_position, format_cell, option_value, summarize
from onebit.results.load import NoRunsError
from onebit.results.registry import PaperTable, register
from onebit.results.select import Selection, Table, paper_tables

NAME = "bethge2018_resnete18"
# the sweep's study, and the studies of single runs of the two experiment overlays (same recipe, same cells)
STUDIES = (NAME, "bethge2018_cifar10", "bethge2018_imagenet")
# the grid of sweeps/bethge2018_resnete18.yaml (${onebit_axis:bethge,<option>})
AXES = {"weight": ("plain", "xnor"), "model.downsample": ("binary", "full_precision"), "sign": ("ste", "approx")}
SCALING = dict(zip(AXES["weight"], ("no", "yes")))      # weight option -> the paper's "scaling"
APPROXSIGN = dict(zip(AXES["sign"], ("no", "yes")))     # sign option -> the paper's "ApproxSign"
DOWNSAMPLES = AXES["model.downsample"]
PAPER_DATA = ("cifar10", "imagenet")          # the datasets of the paper's tables
DATA_ORDER = ("digits", "cifar10", "cifar100", "imagenet")
CONCLUSIONS = (
    # (name, option, a, b, claim): a - b is expected to be > 0 ("positive") or ~ 0 ("equal")
    ("scaling hurts from scratch", "weight", "plain", "xnor", "positive"),
    ("ApproxSign ~ STE", "sign", "approx", "ste", "equal"),
    ("full-precision downsample helps", "downsample", "full_precision", "binary", "positive"),
)
TITLE = ("Bethge et al. 2018 Tables 2-3, ResNetE-18 from scratch, {label} ({metric}, %): ours = mean ± std over "
         "seeds (n) | paper; scaling no/yes = weight=plain/xnor, approxsign yes/no = sign=approx/ste")
# "ApproxSign ~ STE" is supported when the difference lies within +-EQUAL_MARGIN points (TOST, onebit.results.stats)
EQUAL_MARGIN = 1.0
CONCLUSIONS_TITLE = ("Bethge et al. 2018's findings in our data, {label} (paired differences, points; 95 % "
                     "t-intervals over pairs; p and verdicts Holm-adjusted over the table's rows, alpha 0.05; "
                     f"'~' = within ±{EQUAL_MARGIN:g} point, the equivalence margin) | the paper's mean difference "
                     "over the same cells")


def position(rec: RunRecord) -> tuple | None:
    """(data, model, scaling, downsample, approxsign) of a run in the ablation, or None."""
    w, s, ds = rec.options.get("weight"), rec.options.get("sign"), option_value(rec, "downsample")
    if w in SCALING and s in APPROXSIGN and ds in DOWNSAMPLES:
        return (rec.options.get("data"), rec.options.get("model"), SCALING[w], ds, APPROXSIGN[s])
    return None


def _data_rank(data) -> tuple:
    return (DATA_ORDER.index(data) if data in DATA_ORDER else len(DATA_ORDER), str(data))


def _paper_column(metric: str) -> str:
    return "top5" if metric.endswith("top5") else "top1"


def cells(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> dict[tuple, CellSummary]:
    """{position: cell} over seeds, from each run's final stage."""
    return {pos: summarize(recs, metric) for pos, recs in by_position(records, position).items()}


def table(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Tables 2-3 in the paper's layout (all 8 rows; a position without runs says ``missing``)."""
    found = cells(records, metric)
    if not found:
        raise NoRunsError("no runs for Bethge et al. 2018 Tables 2-3 (weight plain|xnor x model.downsample "
                          "binary|full_precision x sign ste|approx)")
    ref = paper.load(NAME).set_index(["dataset", "scaling", "downsample", "approxsign"])
    pcol = _paper_column(metric)
    ours = sorted({(k[0], k[1]) for k in found}, key=lambda c: (_data_rank(c[0]), str(c[1])))
    several_models = len({m for _, m in ours}) > 1
    datasets = sorted({d for d, _ in ours} | set(PAPER_DATA), key=_data_rank)
    rows = []
    for scaling in ("no", "yes"):
        for ds in DOWNSAMPLES:
            for approx in ("yes", "no"):
                row = {"scaling": scaling, "downsample": ds, "approxsign": approx}
                for data in datasets:
                    for d, model in ours:
                        if d == data:
                            label = f"{data} {model}" if several_models else str(data)
                            row[label] = format_cell(found.get((data, model, scaling, ds, approx)))
                    if data in PAPER_DATA:
                        key = (data, scaling, ds, approx)
                        row[f"{data} paper"] = ref.loc[key, pcol] if key in ref.index else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def conclusions(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per dataset and finding: the paired differences (points) between runs identical except for one option (same
    seed; ``onebit.results.paired``) with their statistics (``onebit.results.stats``: 95 % interval, P(a > b), p
    Holm-adjusted over every row of the table, verdict: "scaling hurts" and "full-precision downsample helps" are
    ``positive`` claims, "ApproxSign ~ STE" an ``equal`` claim with the margin :data:`EQUAL_MARGIN`); beside it the
    paper's mean difference over the same cells on CIFAR-10 and on ImageNet."""
    ref = paper.load(NAME).set_index(["dataset", "scaling", "downsample", "approxsign"])[_paper_column(metric)]
    to_paper = {"weight": (0, SCALING), "sign": (2, APPROXSIGN), "downsample": (1, {})}
    inside = [r for r in records if position(r) is not None and r.status == "finished"]
    rows, found, claims = [], [], []
    for data in sorted({r.options.get("data") for r in inside}, key=_data_rank):
        d = [r for r in inside if r.options.get("data") == data]
        for name, option, a, b, claim in CONCLUSIONS:
            pairs_ = paired.pairs(d, option, a, b, metric)
            row = {"data": data, "conclusion": name}
            i, conv = to_paper[option]
            cells_ = {position(p.better)[2:] for p in pairs_}   # (scaling, downsample, approxsign): one model there
            for pdata in PAPER_DATA:
                diffs = []
                for c in sorted(cells_):
                    ka = (pdata, *c[:i], conv.get(a, a), *c[i + 1:])
                    kb = (pdata, *c[:i], conv.get(b, b), *c[i + 1:])
                    if ka in ref.index and kb in ref.index:
                        diffs.append(ref.loc[ka] - ref.loc[kb])
                row[f"paper {pdata} (points)"] = paired.rounded(float(np.mean(diffs)) if diffs else math.nan)
            rows.append(row)
            found.append(pairs_)
            claims.append((claim, EQUAL_MARGIN if claim == "equal" else None))
    names = [f"{r['data']}: {r['conclusion']}" for r in rows]
    order = ["data", "conclusion", "ours (points)", "95% CI", "bootstrap 95% CI", "pairs", "P(better > worse)",
             "p (Holm)", *(f"paper {d} (points)" for d in PAPER_DATA), "verdict"]
    return paired.conclusions_frame(found, names, inside, claims=claims, order=order, row=lambda i, cols, c: {
        "data": rows[i]["data"], "conclusion": rows[i]["conclusion"], **cols,
        **{k: v for k, v in rows[i].items() if k.startswith("paper")}, "verdict": c.verdict})


def placements(rec: RunRecord):
    if (pos := position(rec)) is not None:
        yield pos, cell_items(rec.config)


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    """The table and its findings for one selection, split so that no position mixes cells; [] when the
    selection has no runs of the ablation. The findings table is left out while no run has finished."""
    return paper_tables(sel, [r for r in sel.records if position(r) is not None], placements, NAME,
                        (TITLE, CONCLUSIONS_TITLE),
                        table, conclusions, metric, skip_empty_conclusions=True)


def in_table(rec: RunRecord) -> bool:
    return position(rec) is not None


TABLE = register(PaperTable("bethge", "Bethge et al. 2018 Tables 2-3", NAME, AXES, tables, in_table, CONCLUSIONS,
                            studies=STUDIES, order=3))
