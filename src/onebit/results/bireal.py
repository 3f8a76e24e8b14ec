"""Bi-Real Net Table 1 (Liu et al., ECCV 2018, section 4.2) from our runs, and the paper's conclusions.

Layout: rows init (``pretrain`` relu / clip) x weight update x activation backward (the paper's "original" =
``weight=plain`` / ``sign=ste``, "proposed" = ``weight=magnitude_aware`` / ``sign=approx``), plus the
"Real-valued Net" rows from each run's ``pretrain`` stage; columns structure (Bi-Real / Res / Plain) x depth;
our cell (mean ± std over seeds (n)) beside the paper's ImageNet top-1.

A real-valued cell counts each pretrained twin once (a cache hit shares the twin of an earlier run: one
``cache.key``). When a position would hold runs of more than one cell, :func:`tables` prints one table per
combination of the keys that differ (``onebit.results.cells.split_mixed``).

Each table's title names the runs' training protocol (config key ``protocol``: ``paper_sgd`` / ``official_adam``;
older runs: "not declared" with their optimizer), and, when the runs form a one-factor-at-a-time design
(:func:`one_factor_base`: ``sweeps=bireal_conclusions``), the base they vary around; the positions such a design
leaves out say ``not in design``.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import pandas as pd

from onebit import paper
from onebit.core.registry import DEFAULT_METRIC, PRETRAIN
from onebit.records.identity import LATER_STAGE_KEYS, cell_items
from onebit.records.record import RunRecord
from onebit.results import paired, stats
from onebit.results.cells import CellSummary, format_cell, recipe_name, seed, summarize
from onebit.results.load import NoRunsError
from onebit.results.registry import PaperTable, register
from onebit.results.select import Selection, Table, paper_tables

NAME = "bireal_table1"
# the grid of sweeps/bireal_table1.yaml (which reads it: ${onebit_axis:table1,<option>}); each pair is the paper's
# (original, proposed); the models give the structures (Bi-Real / Res / Plain) at one depth
AXES = {"pretrain": ("relu", "clip"), "weight": ("plain", "magnitude_aware"), "sign": ("ste", "approx"),
        "model": ("bireal18", "res18", "plain18")}
INITS = AXES["pretrain"]
STRUCTURE_LABEL = {"bireal": "Bi-Real", "res": "Res", "plain": "Plain"}
WEIGHT_TO_PAPER = dict(zip(AXES["weight"], ("original", "proposed")))
SIGN_TO_PAPER = dict(zip(AXES["sign"], ("original", "proposed")))
ROWS = (("original", "original"), ("original", "proposed"), ("proposed", "original"), ("proposed", "proposed"),
        ("real", "real"))
CONCLUSIONS = (
    # (name, option, better, worse)
    ("shortcut > none", "structure", "bireal", "plain"),
    ("ApproxSign > STE", "sign", "approx", "ste"),
    ("magnitude-aware > plain", "weight", "magnitude_aware", "plain"),
    ("clip > ReLU init", "pretrain", "clip", "relu"),
)
# how a conclusion's option is set on the command line when it is not an option group: the structure conclusion
# (Bi-Real vs Plain) is the shortcut switch of the same model
SWEEP_KEYS = {"structure": ("shortcut", {"bireal": "true", "plain": "false"})}
PROTOCOLS = {"paper_sgd": "the paper's SGD", "official_adam": "the official code's Adam"}
INIT_LABEL = {"relu": "ReLU", "clip": "clip"}
UPDATE_LABEL = {"weight": {"original": "plain", "proposed": "magnitude-aware"},
                "sign": {"original": "STE", "proposed": "ApproxSign"}}
NOT_IN_DESIGN = "not in design"
TITLE = "Bi-Real Table 1, {label} ({metric}, %): ours = mean ± std over seeds (n) | paper (ImageNet top-1)"
CONCLUSIONS_TITLE = ("Bi-Real Table 1's conclusions in our data, {label} (paired differences, points; 95 % "
                     "t-intervals over pairs; p and verdicts Holm-adjusted over the table's conclusions, alpha 0.05)")


def position(rec: RunRecord) -> tuple | None:
    """(init, weight update, activation backward, structure, depth) of a binary run in Table 1, or None (also for
    a run of another recipe than the paper's one step: ``onebit.results.two_step`` has those)."""
    o = rec.options
    if (recipe_name(rec) == "one_step" and o.get("pretrain") in INITS and o.get("weight") in WEIGHT_TO_PAPER
            and o.get("sign") in SIGN_TO_PAPER and o.get("structure") in STRUCTURE_LABEL
            and isinstance(o.get("depth"), int)):
        return (o["pretrain"], WEIGHT_TO_PAPER[o["weight"]], SIGN_TO_PAPER[o["sign"]], o["structure"], o["depth"])
    return None


def real_position(rec: RunRecord) -> tuple | None:
    """(init, "real", "real", structure, depth) of a run's pretrained twin, or None."""
    o = rec.options
    if (recipe_name(rec) == "one_step" and PRETRAIN in rec.stages and o.get("pretrain") in INITS
            and o.get("structure") in STRUCTURE_LABEL and isinstance(o.get("depth"), int)):
        return (o["pretrain"], "real", "real", o["structure"], o["depth"])
    return None


def twin_items(config: dict) -> dict:
    """The cell items of a run's pretrained twin: its cell items minus the keys only later stages read."""
    return {k: v for k, v in cell_items(config).items()
            if not any(k == p or k.startswith(p + ".") for p in LATER_STAGE_KEYS)}


def placements(rec: RunRecord):
    if (pos := position(rec)) is not None:
        yield pos, cell_items(rec.config)
    if (pos := real_position(rec)) is not None:
        yield pos, twin_items(rec.config)


def in_table(rec: RunRecord) -> bool:
    return position(rec) is not None or real_position(rec) is not None


def cells(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> dict[tuple, CellSummary]:
    """{position: cell}: binary cells from each run's final stage, real-valued cells from the ``pretrain``
    stages, one per pretrained twin (runs that share a ``cache.key`` count once, its finished copy first)."""
    binary: dict[tuple, list] = {}
    twins: dict[tuple, dict] = {}
    for rec in records:
        if (pos := position(rec)) is not None:
            binary.setdefault(pos, []).append(rec)
        if (pos := real_position(rec)) is not None:
            st = rec.stages[PRETRAIN]
            key = (st.cache or {}).get("key") or rec.run_id
            same = twins.setdefault(pos, {})
            if key not in same or (st.finished and not same[key].stages[PRETRAIN].finished):
                same[key] = rec
    out = {pos: summarize(recs, metric) for pos, recs in binary.items()}
    out.update({pos: summarize(list(t.values()), metric, stage=PRETRAIN) for pos, t in twins.items()})
    return out


def table(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Table 1 in the paper's layout (rows without any run are not printed; a position without runs in a
    printed row says ``missing``, or ``not in design`` when the runs are a one-factor-at-a-time design), with the
    paper's top-1 beside each of our columns."""
    found = cells(records, metric)
    if not found:
        raise NoRunsError("no runs for Bi-Real Table 1 (options pretrain relu|clip x weight plain|magnitude_aware "
                          "x sign ste|approx x structure bireal|res|plain)")
    absent = "missing" if one_factor_base(records) is None else NOT_IN_DESIGN
    ref = paper.load(NAME).set_index(["init", "weight_update", "activation_backward", "structure", "depth"])
    columns = sorted({(k[3], k[4]) for k in found}, key=lambda c: (c[1], list(STRUCTURE_LABEL).index(c[0])))
    rows = []
    for init in INITS:
        for w, a in ROWS:
            if not any((init, w, a, *c) in found for c in columns):
                continue
            row = {"init": init, "weight": {"original": "plain", "proposed": "magnitude_aware", "real": "real"}[w],
                   "activation": {"original": "ste", "proposed": "approx", "real": "real"}[a]}
            for st, depth in columns:
                label, key = f"{STRUCTURE_LABEL[st]}-{depth}", (init, w, a, st, depth)
                row[label] = format_cell(found[key]) if key in found else absent
                row[f"{label} paper"] = ref.loc[key, "top1"] if key in ref.index else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def conclusion_rows(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC
                    ) -> list[tuple[dict, list[paired.Pair], stats.Comparison]]:
    """Per conclusion of the paper: its row of :func:`conclusions`, the pairs behind it (binary Table 1 runs
    identical except for that option, same seed: ``onebit.results.paired.pairs``) and its statistics, for the table
    and its figures. The row: the mean paired difference (points), its 95 % t-interval, the bootstrap interval
    (from 5 pairs), the pairs, P(better > worse), the p-value Holm-adjusted over the four conclusions, beside it the
    paper's mean difference over the same Table 1 positions, and the verdict (``onebit.results.stats``)."""
    ref = paper.load(NAME)
    ref = ref[ref["weight_update"] != "real"].set_index(
        ["init", "weight_update", "activation_backward", "structure", "depth"])["top1"]
    axis = {"pretrain": 0, "weight": 1, "sign": 2, "structure": 3}
    to_paper = {"pretrain": {}, "weight": WEIGHT_TO_PAPER, "sign": SIGN_TO_PAPER, "structure": {}}
    binary = [r for r in records if position(r)]
    found = [paired.pairs(binary, option, better, worse, metric) for _, option, better, worse in CONCLUSIONS]
    out = []
    tested = paired.comparisons(found, records=binary, names=[name for name, *_ in CONCLUSIONS])
    for (name, option, better, worse), pairs_, c in zip(CONCLUSIONS, found, tested):
        i, conv = axis[option], to_paper[option]
        paper_diffs = []
        for pos in sorted({position(p.better) for p in pairs_}):
            b = pos[:i] + (conv.get(better, better),) + pos[i + 1:]
            w = pos[:i] + (conv.get(worse, worse),) + pos[i + 1:]
            if b in ref.index and w in ref.index:
                paper_diffs.append(ref.loc[b] - ref.loc[w])
        out.append(({"conclusion": name, **paired.columns(c),
                     "paper (points)": paired.rounded(float(np.mean(paper_diffs)) if paper_diffs else math.nan),
                     "verdict": c.verdict}, pairs_, c))
    return out


def conclusions(records: Sequence[RunRecord], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """The conclusions table: one row per conclusion of the paper (:func:`conclusion_rows`); under it
    (``frame.attrs["notes"]``) the effect the pairs can detect and the seeds an inconclusive one needs."""
    rows = conclusion_rows(records, metric)
    frame = pd.DataFrame([row for row, _, _ in rows])
    names, tested = [row["conclusion"] for row, _, _ in rows], [c for _, _, c in rows]
    binary = [r for r in records if position(r)]
    frame.attrs["notes"] = paired.design_notes(binary, names, tested) + paired.power_notes(names, tested)
    return frame


def one_factor_base(records: Sequence[RunRecord]) -> tuple | None:
    """The base position when the binary runs form a one-factor-at-a-time design (``sweeps=bireal_conclusions``):
    their Table 1 positions are a star (every other position differs from the base in exactly one of init,
    weight update, activation backward and structure, same depth; along at least two of them) and every position
    has runs of the same seeds (a design crossed with its seeds; for a ``seeds=auto`` sweep, every position has the
    first look's seeds and the open comparisons more). None otherwise: a grid, a line, a single cell,
    a few runs that happen to form a star, a design whose sweep has not finished."""
    seeds: dict[tuple, set] = {}
    for rec in records:
        if (pos := position(rec)) is not None:
            seeds.setdefault(pos, set()).add(json.dumps(seed(rec), default=str))
    found = sorted(seeds, key=str)

    def changed(a, b):
        return [i for i in range(len(a)) if a[i] != b[i]]

    bases = [c for c in found if all(len(d := changed(c, p)) == 1 and d[0] < 4 for p in found if p != c)]
    design = paired.design_of([r for r in records if position(r) is not None])
    if design is not None:   # seeds chosen by the data: every cell has the first look's seeds, then more or not
        first = {json.dumps(seed(r), default=str) for r in records if position(r) is not None
                 and isinstance(r.config.get("seed"), int) and r.config["seed"] < design.initial_seeds}
        same_seeds = all(first <= s for s in seeds.values()) and len(first) == design.initial_seeds
    else:
        same_seeds = len({frozenset(s) for s in seeds.values()}) == 1
    if len(bases) != 1 or not same_seeds:
        return None
    base = bases[0]
    return base if len({changed(base, p)[0] for p in found if p != base}) >= 2 else None


def design_label(base: tuple) -> str:
    """``one factor at a time around clip / magnitude-aware / ApproxSign / Bi-Real-18``"""
    init, weight, sign, structure, depth = base
    return (f"one factor at a time around {INIT_LABEL[init]} / {UPDATE_LABEL['weight'][weight]} / "
            f"{UPDATE_LABEL['sign'][sign]} / {STRUCTURE_LABEL[structure]}-{depth}")


def _optimizer(rec: RunRecord) -> str:
    target = str(((rec.config.get("optimizer") or {}).get("_target_")) or "unknown")
    return target.rsplit(".", 1)[-1]


def protocol_label(records: Sequence[RunRecord]) -> str:
    """``protocol: paper_sgd (the paper's SGD)``, ``protocol: not declared (optimizer: Adam)`` for runs without
    the ``protocol`` config key, or ``protocols: ...; ...`` when the cells of one table were trained under several."""
    declared = sorted({str(r.config["protocol"]) for r in records if r.config.get("protocol") is not None})
    parts = [f"{p} ({PROTOCOLS[p]})" if p in PROTOCOLS else p for p in declared]
    undeclared = [r for r in records if r.config.get("protocol") is None]
    if undeclared:
        parts.append(f"not declared (optimizer: {', '.join(sorted({_optimizer(r) for r in undeclared}))})")
    if len(parts) == 1:
        return f"protocol: {parts[0]}"
    return f"protocols: {'; '.join(parts)} (they differ between cells)"


def about(records: Sequence[RunRecord]) -> tuple[str, list[str]]:
    """The title suffix and notes of one Table 1 part: its protocol and, for a one-factor-at-a-time design, its
    base (``onebit.results.select.paper_tables``)."""
    parts, notes = [], []
    if (base := one_factor_base(records)) is not None:
        parts.append(design_label(base))
        notes.append(f"one factor at a time: only the base cell and the cells that change one of its options "
                     f"were run; the other positions say '{NOT_IN_DESIGN}'")
    parts.append(protocol_label(records))
    return "; " + "; ".join(parts), notes


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    """Table 1 and its conclusions for one selection, split so that no position mixes cells; [] when the
    selection has no Table 1 runs. Each part's titles name its protocol and, for a one-factor-at-a-time design,
    its base."""
    return paper_tables(sel, [r for r in sel.records if in_table(r)], placements, NAME, (TITLE, CONCLUSIONS_TITLE),
                        table, conclusions, metric, about=about)


def one_factor_design() -> dict:
    """The one-factor-at-a-time design of the paper's four conclusions (``sweeps/bireal_conclusions.yaml`` reads
    it: ``${onebit_design:table1,base,<key>}``): the base is the paper's method, each conclusion's better option at
    the first model of :data:`AXES`; each factor is one conclusion's worse option."""
    keyed = [(*SWEEP_KEYS.get(option, (option, {})), better, worse) for _, option, better, worse in CONCLUSIONS]
    return {"base": {"model": AXES["model"][0], **{key: values.get(b, b) for key, values, b, _ in reversed(keyed)}},
            "factors": {key: [values.get(w, w)] for key, values, _, w in keyed}}


TABLE = register(PaperTable("table1", "Bi-Real Table 1", NAME, AXES, tables, in_table, CONCLUSIONS, order=1,
                            design=one_factor_design))
