"""Cells: runs identical except for their seed, and what a table shows for them.

A cell is :func:`onebit.records.identity.cell_key` of the run's resolved config (every semantic key except the seed and
the study); nothing else defines one. A cell's value is the mean ± std over seeds of one metric of each run's
final stage (:attr:`RunRecord.final_stage`), never filled from another stage. Failed, running and finished runs
without the metric are counted in the cell's text, never averaged.

A paper table places runs by a few options (Bi-Real Table 1: init x weight x sign x structure x depth). When
one position receives runs of several cells (they differ in, say, ``epochs``), :func:`split_mixed` splits the
runs into one table per combination of the keys that tell those cells apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np

from onebit.core.registry import METRICS
from onebit.records.identity import SEED_KEYS, cell_items, cell_key, digest, flatten
from onebit.records.record import RunRecord

ABSENT = "<absent>"
# the order in which keys are tried when naming cells (first ones that tell cells apart win)
LABEL_ORDER = ("structure", "sign", "weight", "pretrain", "distill", "depth", "model", "shortcut", "sign_t", "data",
               "optimizer", "scheduler", "epochs", "bn_retrain", "experiment", "trainer", "study")


# ----------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------


def seed(rec: RunRecord) -> tuple:
    """The run's seeds (:data:`onebit.records.identity.SEED_KEYS`): what tells the runs of one cell apart."""
    flat = flatten(rec.config)
    return tuple(flat.get(k) for k in SEED_KEYS)


def seed_label(rec: RunRecord):
    return rec.config.get("seed", rec.options.get("seed"))


def started(rec: RunRecord) -> float:
    return float(rec.timings.get("started") or 0.0)


def stage_status(rec: RunRecord, stage: str | None = None) -> str:
    """finished / failed / interrupted / running: the run's status (its final stage), or one ``stage``'s (a stage
    that never finished in a failed or interrupted run is failed or interrupted)."""
    if stage is None:
        return rec.status
    st = rec.stages.get(stage)
    if st is not None and st.status in ("finished", "failed", "interrupted"):
        return st.status
    return rec.status if rec.status in ("failed", "interrupted") else "running"


def metric(rec: RunRecord, name: str, stage: str | None = None) -> float | None:
    """``name`` of the final stage's metrics (or of ``stage``'s), None when absent or not finite."""
    st = rec.stages.get(stage) if stage else rec.final_stage
    value = (st.metrics if st is not None else {}).get(name)
    return float(value) if value is not None and math.isfinite(value) else None


def distill_name(rec: RunRecord) -> str:
    """The run's teacher option (``conf/distill``: none, twin, teacher); ``none`` for records from before it."""
    return rec.options.get("distill") or (rec.config.get("distill") or {}).get("name") or "none"


def recipe_name(rec: RunRecord) -> str:
    """The run's recipe, named by what it ran (``conf/recipe``: one_step, two_step, two_step_no_distill);
    ``one_step`` for records from before recipes.

    Both ``two_step`` options run the steps whose config ``name`` is ``two_step``; ``recipe=two_step`` brings the
    twin as teacher (ReActNet's way), ``two_step_no_distill`` none. So a run of those steps is ``two_step`` when a
    teacher taught it and ``two_step_no_distill`` when none did, whatever option name it was started with: the
    records of ``recipe=two_step`` from before distillation (no ``distill`` in their config) and runs of
    ``recipe=two_step distill=none`` are ``two_step_no_distill``, never mistaken for the distilled recipe."""
    config_name = (rec.config.get("recipe") or {}).get("name")
    if config_name == "two_step":
        return "two_step" if distill_name(rec) != "none" else "two_step_no_distill"
    if rec.options.get("recipe"):
        return rec.options["recipe"]
    return config_name or "one_step"


# switches compared like options that live in a group's config: name -> (config path, value when absent)
CONFIG_OPTIONS = {"learnable_threshold": (("sign", "learnable_threshold"), False)}   # ReActNet's RSign


def option_value(rec: RunRecord, name: str):
    """An option of the run (``sign``, ``structure``...; ``recipe`` as :func:`recipe_name` names it), a switch of
    :data:`CONFIG_OPTIONS` (``learnable_threshold`` -> ``config.sign.learnable_threshold``, false when a record
    predates it), or else the model's config value of that name (``downsample`` -> ``config.model.downsample``)."""
    if name == "recipe" and rec.options.get("recipe"):
        return recipe_name(rec)
    if name in rec.options:
        return rec.options[name]
    if name in CONFIG_OPTIONS:
        (group, key), absent = CONFIG_OPTIONS[name]
        return (rec.config.get(group) or {}).get(key, absent)
    return (rec.config.get("model") or {}).get(name)


# ----------------------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------------------


def by_position(records: Iterable[RunRecord], position: Callable[[RunRecord], Hashable | None]
                ) -> dict[Hashable, list[RunRecord]]:
    """Records by a paper table's ``position(record)`` (``None``: not in the table, left out), in their order."""
    at: dict[Hashable, list[RunRecord]] = {}
    for rec in records:
        if (pos := position(rec)) is not None:
            at.setdefault(pos, []).append(rec)
    return at


def group_cells(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records by :func:`onebit.records.identity.cell_key` (insertion order = first appearance)."""
    cells: dict[str, list[RunRecord]] = {}
    for rec in records:
        cells.setdefault(cell_key(rec.config), []).append(rec)
    return cells


def dedupe(records: Sequence[RunRecord]) -> tuple[list[RunRecord], int]:
    """One run per (cell, seed): the latest finished run by ``timings.started``, else the latest run (a rerun
    of the same job with ``resume=false`` supersedes the older one). Returns (kept, number dropped)."""
    best: dict[tuple, RunRecord] = {}
    for rec in records:
        key = (cell_key(rec.config), json.dumps(seed(rec), default=str))
        old = best.get(key)
        if old is None or (rec.status == "finished", started(rec)) >= (old.status == "finished", started(old)):
            best[key] = rec
    kept = [r for r in records if any(r is b for b in best.values())]
    return kept, len(records) - len(kept)


@dataclass
class CellSummary:
    """One cell of a table. ``values`` are the finished runs' metric, in percent (x 100) for an accuracy
    (:data:`METRICS`), as recorded otherwise (a loss)."""

    metric: str
    values: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    failed: int = 0
    interrupted: int = 0   # stopped by a signal (onebit.records.lifecycle): resumable, not a failure
    running: int = 0
    missing: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        """mean = (1/n) sum_i x_i over the n seeds."""
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """std = sqrt(sum_i (x_i - mean)^2 / (n - 1)) over seeds (ddof=1); NaN for one seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def percent(self) -> bool:
        return self.metric in METRICS

    def text(self) -> str:
        """``85.0 ± 7.1 (n=2), 1 failed, 1 running, 1 missing test/top1`` (``missing`` without any run): an
        accuracy in percent with one decimal, another metric with 3 (mean) and 2 (std) significant digits
        (``0.412 ± 0.031 (n=2)``)."""
        mean, std = (".1f", ".1f") if self.percent else (".3g", ".2g")
        parts = []
        if self.n:
            parts.append(f"{self.mean:{mean}}{'' if math.isnan(self.std) else f' ± {self.std:{std}}'} (n={self.n})")
        for count, what in ((self.failed, "failed"), (self.interrupted, "interrupted"), (self.running, "running"),
                            (self.missing, f"missing {self.metric}")):
            if count:
                parts.append(f"{count} {what}")
        return ", ".join(parts) if parts else "missing"


def summarize(records: Iterable[RunRecord], metric_name: str, stage: str | None = None) -> CellSummary:
    """The cell of ``records`` (runs of one cell, one per seed): each finished run contributes x_i = the metric
    of its final stage (or of ``stage``), x 100 for an accuracy; failed / running runs and finished runs without
    the metric are counted, not averaged (see :class:`CellSummary` for mean and std)."""
    c = CellSummary(metric_name)
    for rec in sorted(records, key=lambda r: json.dumps(seed(r), default=str)):
        status = stage_status(rec, stage)
        if status == "failed":
            c.failed += 1
        elif status == "interrupted":
            c.interrupted += 1
        elif status != "finished":
            c.running += 1
        elif (v := metric(rec, metric_name, stage)) is None:
            c.missing += 1
        else:
            c.values.append(100.0 * v if c.percent else v)
            c.seeds.append(seed_label(rec))
    return c


def format_cell(c: CellSummary | None) -> str:
    return "missing" if c is None else c.text()


# ----------------------------------------------------------------------------------------------------------
# Table positions that would mix cells
# ----------------------------------------------------------------------------------------------------------


def differing_keys(items: Sequence[dict]) -> list[str]:
    """The keys whose value is not the same in every dict of ``items`` (absent counts as a value)."""
    keys = {k for it in items for k in it}
    return sorted(k for k in keys if len({json.dumps(it.get(k, ABSENT), default=str) for it in items}) > 1)


Placements = Callable[[RunRecord], Iterable[tuple[Hashable, dict]]]


def split_mixed(records: Sequence[RunRecord], placements: Placements) -> list[tuple[dict, list[RunRecord]]]:
    """Split ``records`` so that no table position holds more than one cell.

    ``placements(record)`` gives the (position, identity items) pairs where a table puts the record (its cell
    items; for a row from a shared stage such as the pretrained twin, that stage's items). The keys that differ
    between the items landing on one position are the *extra* keys; the records are split by their values of
    those keys (:func:`onebit.records.identity.cell_items`). Returns [(extra key -> value, records)], a single
    ``({}, records)`` when nothing mixes."""
    at: dict[Hashable, dict[str, dict]] = {}
    for rec in records:
        for pos, items in placements(rec):
            at.setdefault(pos, {})[digest(items)] = items
    extra = sorted({k for cells in at.values() if len(cells) > 1 for k in differing_keys(list(cells.values()))})
    if not extra:
        return [({}, list(records))]
    parts: dict[tuple, list[RunRecord]] = {}
    for rec in records:
        items = cell_items(rec.config)
        parts.setdefault(tuple(items.get(k, ABSENT) for k in extra), []).append(rec)
    return [(dict(zip(extra, key)), recs) for key, recs in sorted(parts.items(), key=lambda kv: str(kv[0]))]


def describe(items: dict, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={items.get(k, ABSENT)}" for k in keys)


# ----------------------------------------------------------------------------------------------------------
# Naming cells
# ----------------------------------------------------------------------------------------------------------


def _text(value) -> str:
    return str(value).lower()


def label_items(records: Sequence[RunRecord]) -> dict[str, Any]:
    """What a cell can be named by: its cell items (dotted config leaves) plus the options (``sign``,
    ``structure``...) that all its runs share, except seed and study."""
    items = {k: v for k, v in records[0].options.items() if k not in ("seed", "study")
             and all(_text(r.options.get(k)) == _text(v) for r in records)}
    items.update(cell_items(records[0].config))
    return items


def label_keys(cells: Sequence[dict], exclude: Iterable[str] = ()) -> list[str]:
    """The fewest keys, tried in :data:`LABEL_ORDER` (then other options, then config leaves), that tell
    ``cells`` (dicts of :func:`label_items`) apart given the ``exclude`` keys (shown elsewhere): a key enters
    only if, with ``exclude`` and the keys already chosen, it separates more cells."""
    exclude = [k for k in dict.fromkeys(exclude) if k is not None]
    varying = [k for k in {k for c in cells for k in c}
               if k not in exclude and len({_text(c.get(k)) for c in cells}) > 1]
    order = sorted(varying, key=lambda k: (k not in LABEL_ORDER, "." in k,
                                           LABEL_ORDER.index(k) if k in LABEL_ORDER else 0, k))

    def distinct(keys):
        return len({tuple(_text(c.get(k)) for k in keys) for c in cells})

    chosen: list[str] = []
    target, n = distinct([*exclude, *order]), distinct(exclude)
    for k in order:
        if n >= target:
            break
        m = distinct([*exclude, *chosen, k])
        if m > n:
            chosen.append(k)
            n = m
    return chosen


def common_options(records: Sequence[RunRecord], skip: Iterable[str] = ("seed",)) -> str:
    """The options every record shares (for a subtitle)."""
    skip = set(skip)
    keys = [k for k in LABEL_ORDER if k not in skip] + sorted(
        {k for r in records for k in r.options} - set(LABEL_ORDER) - skip)
    same = [k for k in keys if records and records[0].options.get(k) is not None
            and len({_text(r.options.get(k)) for r in records}) == 1]
    return ", ".join(f"{k}={records[0].options[k]}" for k in same)
