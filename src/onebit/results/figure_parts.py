"""Which runs one figure shows, and how its cells and parts are named (``onebit.results.figures``, ``python
analysis/plots.py``): a generic figure is split exactly as the tables split their selection
(``onebit.results.select.split_parts``), further only where no readable key tells cells apart, and its parts are
named by the options that tell them apart (``pretrain=clip``) before config leaves (``pretrain.epochs``)."""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from onebit.core.registry import OPTION_GROUPS
from onebit.records.identity import cell_items, digest
from onebit.records.record import RunRecord
from onebit.results.cells import (
    ABSENT,
    describe,
    group_cells,
    label_items,
    label_keys,
    option_value,
    recipe_name,
    split_mixed,
)
from onebit.results.select import Part, Selection, split_parts




def readable(value) -> bool:
    """A value a label can show: not :data:`onebit.results.cells.ABSENT`, not a list or dict (``recipe.steps``)."""
    return not (isinstance(value, str) and value == ABSENT) and not isinstance(value, (list, tuple, dict))


def value_text(value) -> str:
    """A split value as a title or file name shows it: ``unset`` for an absent key, a list as ``2,3``."""
    if isinstance(value, str) and value == ABSENT:
        return "unset"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) or "none"
    return str(value)


def figure_items(records: Sequence[RunRecord]) -> dict:
    """:func:`onebit.results.cells.label_items` of a cell, with its ``recipe`` option (``one_step`` for records from
    before recipes, ``onebit.results.cells.recipe_name``): what a figure's labels and splits name a cell by."""
    return {**label_items(records), "recipe": recipe_name(records[0])}


def readable_keys(cells: Sequence[dict]) -> set[str]:
    """The keys that every cell (:func:`onebit.results.cells.label_items`) has with a :func:`readable` value."""
    keys = set().union(*cells) if cells else set()
    return {k for k in keys if all(k in c and readable(c[k]) for c in cells)}


def figure_label_keys(cells: Sequence[dict], exclude: Iterable[str] = ()) -> list[str]:
    """:func:`onebit.results.cells.label_keys` over the :func:`readable_keys` only (options first): a label never
    shows ``<absent>`` or a JSON blob; cells that no readable key tells apart are split by :func:`figure_parts`."""
    ok = readable_keys(cells)
    return label_keys([{k: v for k, v in c.items() if k in ok} for c in cells], exclude)


def compared_placements(compared: Sequence[str]):
    """A generic figure's placements (``onebit.results.cells.split_mixed``): its position is the values of the
    ``compared`` options (the ablation's ``--by`` and ``--color``), its items the run's cell items."""
    def placements(rec: RunRecord):
        yield tuple(str(option_value(rec, k)).lower() for k in compared), cell_items(rec.config)
    return placements


def _readable_placements(records: Sequence[RunRecord]):
    ok = readable_keys([figure_items(rs) for rs in group_cells(records).values()])

    def placements(rec: RunRecord):
        yield digest({k: v for k, v in figure_items([rec]).items() if k in ok}), cell_items(rec.config)
    return placements


def _naming_option(parts: Sequence[Part], keys: Sequence[str]) -> str | None:
    """An option (``recipe``) whose value is one per part and tells the parts apart exactly as ``keys`` do."""
    shared = [{k: v for k, v in figure_items(p.records).items() if "." not in k} for p in parts]
    by_keys = [json.dumps([p.fixed.get(k, ABSENT) for k in keys], default=str) for p in parts]
    for opt in sorted(set.intersection(*(set(s) for s in shared)) - set(keys)):
        values = [str(s[opt]) for s in shared]
        if len(set(values)) == len(set(by_keys)) == len(set(zip(values, by_keys))):
            return opt
    return None


_MIXED = object()  # a key a part does not fix (its runs differ in it): left out of that part's title


def _common(records: Sequence[RunRecord], key: str):
    """The value of config key ``key`` that every run of ``records`` has (ABSENT when none has it), else _MIXED."""
    values = {json.dumps(cell_items(r.config).get(key, ABSENT), default=str) for r in records}
    return cell_items(records[0].config).get(key, ABSENT) if len(values) == 1 else _MIXED


def _option(records: Sequence[RunRecord], name: str):
    """The option ``name`` every run of ``records`` chose (``None``: not recorded), else _MIXED."""
    values = {str(r.options.get(name)) for r in records}
    return records[0].options.get(name) if len(values) == 1 else _MIXED


def _same_split_once(fixed: Sequence[dict]) -> list[str]:
    """The keys of ``fixed`` (one dict per part) to show: a key that splits the parts exactly as a key shown before
    it does (``pretrain.epochs`` as ``epochs``; options before config leaves) is left out of titles and names."""
    shown: list[str] = []
    for k in sorted(fixed[0] if fixed else [], key=lambda k: "." in k):
        col = [json.dumps(f[k], default=str) for f in fixed]
        if not any(len(set(col)) == len(set(j)) == len(set(zip(col, j)))
                   for j in ([json.dumps(f[s], default=str) for f in fixed] for s in shown)):
            shown.append(k)
    return shown


def figure_parts(sel: Selection, records: Sequence[RunRecord], compared: Sequence[str]) -> list[Part]:
    """The figures of a generic (not a paper table's) selection, split as the tables split theirs
    (``onebit.results.select.split_parts``): runs at one position of the ``compared`` options that differ in any
    other key (``epochs``, ``trainer.gradient_clip_val``) are never drawn together, and cells that no readable key
    tells apart are split too. Each part's ``fixed`` holds readable values (an option that names an unreadable key,
    ``recipe=two_step`` for ``recipe.steps``, else ``unset`` / ``2,3``), ``label`` the selection's label and those
    key=values, ``name`` the file-name suffix (``-epochs=2``, as ``onebit.results.select.table_name``)."""
    parts = []
    for part in split_parts(sel, records, compared_placements(compared), "figure"):
        for extra, recs in split_mixed(part.records, _readable_placements(part.records)):
            note = [f"split: cells that no readable key tells apart differ in {', '.join(extra)}"] if extra else []
            notes = [n.replace(" tables)", " figures)").replace("one table per", "one figure per")
                     for n in part.notes]
            parts.append(Part(recs, sel.label, notes + note, "", {**part.fixed, **extra}))
    keys = list(dict.fromkeys(k for p in parts for k in p.fixed))
    unreadable = [k for k in keys if any(not readable(p.fixed.get(k, ABSENT)) for p in parts)]
    opt = _naming_option(parts, unreadable) if unreadable else None
    # the options that tell parts apart, first: `pretrain=clip`, not `pretrain.activation._target_=...Clip`
    names = sorted({o for p in parts for o in p.records[0].options} - {"seed", *compared},
                   key=lambda o: (o not in OPTION_GROUPS, OPTION_GROUPS.index(o) if o in OPTION_GROUPS else 0, o))
    named = {o: vs for o in names
             if len(set(vs := [_option(p.records, o) for p in parts])) > 1 and _MIXED not in vs}
    fixed = [{**{o: vs[i] for o, vs in named.items()}, **{k: p.fixed[k] if k in p.fixed else _common(p.records, k)
              for k in keys if opt is None or k not in unreadable}} for i, p in enumerate(parts)]
    if opt is not None:
        for f, p in zip(fixed, parts):
            f[opt] = figure_items(p.records)[opt]
    shown = _same_split_once(fixed)
    for f, p in zip(fixed, parts):
        p.fixed = {k: value_text(f[k]) for k in shown if f[k] is not _MIXED}
        p.label += f" [{describe(p.fixed, list(p.fixed))}]" if p.fixed else ""
        p.name = "".join(c if c.isalnum() or c in "-_.=," else "_" for c in "".join(
            f"-{k}={v}" for k, v in p.fixed.items()))
    return parts
