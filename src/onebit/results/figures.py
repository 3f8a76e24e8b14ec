"""The numbers behind ``onebit.figures``' figures (``python analysis/plots.py``): training curves per cell (mean
and band over seeds, per
epoch), one bar per cell (the tables' cell: mean ± std over seeds, ``onebit.results.cells.summarize``) and the
paired differences behind each of Bi-Real Table 1's conclusions (with the conclusions table's row), from the same
records, cells and pairs as the tables.

Curves average only finished runs whose stage finished; a bar is the tables' cell (a run enters when the stage
shown finished, ``onebit.results.cells.stage_status``); failed and running runs are counted, never averaged.
Histories are aligned per epoch (schema 2 on; schema-1 records are aligned by ``onebit.records.record`` when read).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from onebit.core.registry import BINARY, DEFAULT_METRIC
from onebit.records.identity import cell_items
from onebit.records.layout import LAST, stage_dir
from onebit.records.record import RunRecord
from onebit.results import bireal
from onebit.results.cells import (
    describe,
    group_cells,
    seed,
    seed_label,
    summarize,
)
from onebit.results.figure_parts import (  # noqa: F401  (re-exported: figures and plots name them here)
    compared_placements,
    figure_items,
    figure_label_keys,
    figure_parts,
    readable,
    readable_keys,
    value_text,
)
from onebit.results.select import Part, Selection, split_parts
from onebit.results.stats import Comparison

BANDS = ("minmax", "std")
CURVE_METRICS = ("val/top1", "train/loss")
FINAL = "final"  # --stage final: each run's last stage, the stage the tables show
AS_TABLES = "cells as in tables.py"  # every figure's title says where its cells and splits come from


class UsageError(ValueError):
    """A bad argument value (unknown stage, metric, option...): one line naming it and the valid ones."""


def where(records: Sequence[RunRecord], conditions: Sequence[str]) -> list[RunRecord]:
    """The records whose options match every ``key=value`` (case-insensitive)."""
    for cond in conditions:
        key, sep, value = cond.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {cond!r} is invalid: use key=value, e.g. --where sign=approx")
        keys = sorted({k for r in records for k in r.options})
        if key not in keys:
            raise UsageError(f"--where key {key!r} is unknown; valid keys: {', '.join(keys)}")
        records = [r for r in records if str(r.options.get(key)).lower() == value.lower()]
    return list(records)


def stage_records(records: Sequence[RunRecord], stage: str) -> list[RunRecord]:
    """The records that concern ``stage``: those whose recipe has it, and every unfinished record (every record
    for :data:`FINAL`)."""
    return [r for r in records if stage == FINAL or stage in r.stages or r.status != "finished"]


def usable(rec: RunRecord, stage: str) -> bool:
    """A finished run whose ``stage`` finished."""
    return rec.status == "finished" and stage in rec.stages and rec.stages[stage].finished


def status_counts(records: Iterable[RunRecord]) -> Counter:
    return Counter(r.status for r in records)


def format_counts(c: Counter) -> str:
    """``"4 runs: 3 finished, 1 failed"``."""
    total = sum(c.values())
    parts = [f"{c['finished']} finished"] + [f"{n} {s}" for s, n in sorted(c.items()) if s != "finished" and n]
    return f"{total} run{'s' if total != 1 else ''}: {', '.join(parts)}"


def check_stage(records: Sequence[RunRecord], stage: str, final: bool = False) -> None:
    """``stage`` is one the records have (or :data:`FINAL`, where ``final`` allows it)."""
    stages = sorted({s for r in records for s in r.stages}) + ([FINAL] if final else [])
    if stage not in stages:
        raise UsageError(f"unknown --stage {stage!r}; valid stages: {', '.join(stages) or '(none recorded)'}")


def check_option(records: Sequence[RunRecord], key: str, flag: str) -> None:
    keys = sorted({k for r in records for k in r.options if k != "seed"})
    if key not in keys:
        raise UsageError(f"unknown {flag} {key!r}; valid options: {', '.join(keys)}")


def check_metric(records: Sequence[RunRecord], stage: str, metric: str) -> None:
    """``metric`` is recorded by ``stage`` of some run (by some run's final stage for :data:`FINAL`)."""
    found = [r.final_stage for r in records if r.final_stage] if stage == FINAL else \
        [r.stages[stage] for r in records if stage in r.stages]
    metrics = sorted({m for st in found for m in st.metrics})
    if metric not in metrics:
        raise UsageError(f"unknown --metric {metric!r} for stage {stage!r}; valid metrics: "
                         f"{', '.join(metrics) or '(none recorded)'}")


def _by_seed(records: Sequence[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: str(seed(r)))


# ----------------------------------------------------------------------------------------------------------
# Curves
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CellCurves:
    """The curves of one cell: ``series[metric]`` is a DataFrame indexed by epoch with columns mean, std
    (ddof=1), min, max, lo, hi (the band) and n (seeds), over the epochs every seed has."""

    items: dict
    label: str
    counts: Counter
    seeds: list
    series: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def runs(self) -> int:
        return sum(self.counts.values())


def history(rec: RunRecord, stage: str) -> pd.DataFrame:
    """A stage's per-epoch history (aligned per epoch), indexed by epoch."""
    hist = rec.stages[stage].history
    if not hist:
        return pd.DataFrame()
    return pd.DataFrame(hist).drop_duplicates("epoch", keep="last").set_index("epoch").sort_index()


def curve_data(records: Sequence[RunRecord], stage: str = BINARY, metrics: Sequence[str] = CURVE_METRICS,
               band: str = "minmax", exclude_label: Iterable[str] = ()) -> list[CellCurves]:
    """Per cell, per epoch: mean = (1/n) sum_i x_i over the n seeds, std with ddof=1, and a band (``minmax``:
    min..max over seeds, ``std``: mean ± 1 std). An epoch enters only when every used seed has it, so no point
    averages a partial set of seeds; a metric enters only when every used seed logged it."""
    if band not in BANDS:
        raise UsageError(f"unknown --band {band!r}; valid bands: {', '.join(BANDS)}")
    cells = group_cells(stage_records(records, stage))
    items = {key: figure_items(recs) for key, recs in cells.items()}
    keys = figure_label_keys(list(items.values()), exclude_label)
    out = []
    for key, recs in cells.items():
        histories = [(seed_label(r), h) for r in _by_seed(recs) if usable(r, stage)
                     for h in [history(r, stage)] if not h.empty]
        cell = CellCurves(items=items[key], label=describe(items[key], keys) or "all runs",
                          counts=status_counts(recs), seeds=[s for s, _ in histories])
        for m in metrics:
            cols = {i: h[m] for i, (_, h) in enumerate(histories) if m in h}
            if len(cols) < len(histories) or not cols:
                cell.series[m] = pd.DataFrame(columns=["mean", "std", "min", "max", "lo", "hi", "n"])
                continue
            wide = pd.DataFrame(cols).astype(float)
            wide = wide[wide.notna().all(axis=1)]
            s = pd.DataFrame({"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1),
                              "min": wide.min(axis=1), "max": wide.max(axis=1), "n": wide.count(axis=1)})
            if band == "minmax":
                s["lo"], s["hi"] = s["min"], s["max"]
            else:
                std = s["std"].fillna(0.0)
                s["lo"], s["hi"] = s["mean"] - std, s["mean"] + std
            s.index.name = "epoch"
            cell.series[m] = s
        out.append(cell)
    return out


# ----------------------------------------------------------------------------------------------------------
# Bars
# ----------------------------------------------------------------------------------------------------------


def ablation_data(records: Sequence[RunRecord], stage: str = FINAL, metric: str = DEFAULT_METRIC,
                  by: str = "structure", color: str = "sign") -> pd.DataFrame:
    """One row per cell: the ``by`` and ``color`` option values, ``label`` (the other keys that tell cells
    apart) and ``cell``, the tables' :class:`onebit.results.cells.CellSummary` of the cell's runs
    (:func:`onebit.results.cells.summarize`: ``metric`` of each run's final stage for :data:`FINAL`, as the tables,
    else of ``stage``: mean, std (ddof=1), the seeds' values, failed / running / missing counts); sorted by ``by``,
    ``color``, ``label``."""
    check_stage(records, stage, final=True)
    check_option(records, by, "--by")
    check_option(records, color, "--color")
    check_metric(records, stage, metric)
    cells = group_cells(stage_records(records, stage))
    items = {key: figure_items(recs) for key, recs in cells.items()}
    keys = figure_label_keys(list(items.values()), exclude=[by, color])
    rows = []
    for key, recs in cells.items():
        rows.append({by: items[key].get(by), color: items[key].get(color), "label": describe(items[key], keys),
                     "cell": summarize(recs, metric, None if stage == FINAL else stage)})
    df = pd.DataFrame(rows)
    sort = list(dict.fromkeys([by, color, "label"]))
    return df.sort_values(sort, key=lambda s: s.map(lambda v: str(v).lower())).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# Paired differences of Bi-Real Table 1's conclusions
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ConclusionPart:
    """One conclusion in one part of the Table 1 runs (one protocol): the per-pair differences (points,
    ``onebit.results.paired.Pair.diff``), their seeds, and the conclusions table's row for it (``ours (points)``,
    ``95% CI``, ``pairs``, ``paper (points)``, ``verdict``...: the printed, rounded numbers) with the statistics behind
    it (``onebit.results.stats.Comparison``: the interval the verdict used, unrounded)."""

    label: str
    diffs: list
    seeds: list
    row: dict
    stats: Comparison


def part_label(part: Part) -> str:
    """How a part of the Table 1 runs is named in a figure: the keys a split fixed it to (``Part.fixed``), but its
    protocol, then the protocol (``bireal.protocol_label``)."""
    return ", ".join(filter(None, [describe(part.fixed, [k for k in part.fixed if k != "protocol"]),
                                   bireal.protocol_label(part.records)]))


def conclusion_data(sel: Selection, metric: str = DEFAULT_METRIC) -> dict[str, list[ConclusionPart]]:
    """Per conclusion of Bi-Real Table 1 (``bireal.CONCLUSIONS``), per part of the selection's Table 1 runs (split
    as the tables are: ``onebit.results.select.split_parts``), the pairs and the conclusions table's row
    (``bireal.conclusion_rows``); conclusions without a single pair are left out, {} without Table 1 runs. A part
    without pairs stays in its conclusion's list (empty ``diffs``): the figure names it instead of drawing a row."""
    records = [r for r in sel.records if bireal.in_table(r)]
    out: dict[str, list[ConclusionPart]] = {}
    for part in split_parts(sel, records, bireal.placements, bireal.NAME) if records else []:
        for row, found, c in bireal.conclusion_rows(part.records, metric):
            out.setdefault(row["conclusion"], []).append(ConclusionPart(
                part_label(part), [p.diff for p in found], [seed_label(p.better) for p in found], row, c))
    return {name: parts for name, parts in out.items() if any(p.diffs for p in parts)}


# ----------------------------------------------------------------------------------------------------------
# The shortcut pair of the activation figure
# ----------------------------------------------------------------------------------------------------------


def checkpoint(rec: RunRecord, stage: str) -> Path:
    return stage_dir(rec.run_dir, stage) / LAST


def shortcut_pair(records: Sequence[RunRecord], stage: str = BINARY) -> tuple[RunRecord, RunRecord] | None:
    """(bireal, plain): finished runs with ``structure=bireal`` (shortcuts) and ``structure=plain`` (none),
    identical except for ``model.shortcut`` and the seed, each with a ``stage`` checkpoint; the first such pair
    (sorted), at the lowest seed both sides have (else each side's lowest seed)."""
    sides: dict[str, dict[str, list]] = {}
    for r in records:
        s = r.options.get("structure")
        if s in ("bireal", "plain") and usable(r, stage) and checkpoint(r, stage).exists():
            items = {k: v for k, v in cell_items(r.config).items() if k != "model.shortcut"}
            sides.setdefault(str(sorted(items.items())), {"bireal": [], "plain": []})[s].append(r)
    for key in sorted(sides):
        b, p = sides[key]["bireal"], sides[key]["plain"]
        if b and p:
            common = sorted({str(seed(r)) for r in b} & {str(seed(r)) for r in p})
            if common:
                b = [r for r in b if str(seed(r)) == common[0]]
                p = [r for r in p if str(seed(r)) == common[0]]
            return _by_seed(b)[0], _by_seed(p)[0]
    return None
