"""Which runs a table shows, and the notes that say what was left out and why.

:func:`select` splits the loaded records per study (mixing studies needs ``all_studies``), leaves out smoke runs
(``record.smoke``: a Trainer setting cut them short) unless ``include_smoke``, and keeps one run per cell and
seed (:func:`onebit.results.cells.dedupe`). Every decision becomes a note printed with the table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from onebit.records.record import RunRecord
from onebit.results.cells import Placements, dedupe, describe, split_mixed
from onebit.results.load import NoRunsError


@dataclass
class Table:
    """One table to print: ``name`` (its file name without suffix), ``title``, the frame and its notes."""

    name: str
    title: str
    frame: pd.DataFrame
    notes: list = field(default_factory=list)


@dataclass
class Selection:
    """The runs of one study (or of all studies, mixed): ``label`` goes into every table title."""

    label: str
    study: str | None
    records: list
    notes: list = field(default_factory=list)
    left_out: int = 0   # smoke runs left out



def smoke_note(records: Sequence[RunRecord]) -> str:
    """``2 smoke runs (trainer.limit_train_batches=3)``: how many, and the settings that made them smoke runs."""
    reasons = Counter(r for rec in records for r in rec.smoke)
    n = len(records)
    return f"{n} smoke run{'s' if n != 1 else ''} ({', '.join(sorted(reasons))})"


def _one(label: str, study: str | None, records: list[RunRecord], include_smoke: bool) -> Selection:
    smoke = [r for r in records if r.smoke]
    notes = []
    if smoke and include_smoke:
        label += ", smoke runs included"
        notes.append(f"includes {smoke_note(smoke)}: cut short, not comparable to full runs")
    elif smoke:
        notes.append(f"left out: {smoke_note(smoke)}; --include-smoke shows them")
        records = [r for r in records if not r.smoke]
    records, dropped = dedupe(records)
    if dropped:
        notes.append(f"dropped {dropped} older duplicate(s) of the same cell and seed (kept the latest finished run)")
    return Selection(label, study, records, notes, 0 if include_smoke else len(smoke))


def select(records: Sequence[RunRecord], study: str | None = None, all_studies: bool = False,
           include_smoke: bool = False) -> list[Selection]:
    """One :class:`Selection` per study that has runs (or the one asked for), or one of all studies mixed.
    Raises :class:`NoRunsError` when ``study`` has no runs, or when smoke runs were all there was."""
    studies = sorted({r.study for r in records})
    if study is not None:
        if study not in studies:
            raise NoRunsError(f"no runs of study {study!r} (studies: {', '.join(studies)})")
        out = [_one(f"study {study}", study, [r for r in records if r.study == study], include_smoke)]
    elif all_studies and len(studies) > 1:
        out = [_one(f"all studies mixed ({', '.join(studies)})", None, list(records), include_smoke)]
    else:
        out = [_one(f"study {s}", s, [r for r in records if r.study == s], include_smoke) for s in studies]
    if not any(s.records for s in out):
        raise NoRunsError("no runs to show: " + "; ".join(f"{s.label}: {' '.join(s.notes)}" for s in out))
    return out


def table_name(base: str, sel: Selection, extra: dict | None = None, home: Sequence[str] = ()) -> str:
    """A table's file name: ``base``, then ``-<study>`` unless the study is the table's own (``home``, default
    ``base``) or ``-all_studies``, then ``-key=value`` for each key a split table is fixed to."""
    name = base
    if sel.study is None:
        name += "-all_studies"
    elif sel.study not in (home or (base,)):
        name += f"-{sel.study}"
    for k, v in (extra or {}).items():
        name += f"-{k}={v}"
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)


@dataclass
class Part:
    """One printed table of a selection: its runs, label, notes, file name and ``fixed``, the key -> value that
    the split fixed it to and that its label and name show (none when the selection was not split)."""

    records: list
    label: str
    notes: list
    name: str
    fixed: dict = field(default_factory=dict)


def split_parts(sel: Selection, records: Sequence[RunRecord], placements: Placements, base: str) -> list[Part]:
    """``records`` split so that no table position mixes cells (``cells.split_mixed``), each part labelled with
    the key=values it is fixed to, with a note saying why it was split."""
    parts = split_mixed(records, placements)
    implied = implied_keys([extra for extra, _ in parts])
    out = []
    for extra, recs in parts:
        fixed = {k: v for k, v in extra.items() if k not in implied}
        notes = list(sel.notes)
        if extra:
            also = f" (and what it sets: {', '.join(k for k in extra if k in implied)})" if implied else ""
            notes.append(f"split: runs at the same position differ in {', '.join(fixed)}{also}; one table per "
                         f"combination, never averaged together ({len(parts)} tables)")
        label = sel.label + (f" [{describe(fixed, list(fixed))}]" if fixed else "")
        out.append(Part(recs, label, notes, table_name(base, sel, fixed), fixed))
    return out


NAMING_KEYS = ("protocol", "recipe.name")  # a choice that sets many keys: a split names it, not what it sets


def implied_keys(extras: Sequence[dict]) -> set[str]:
    """The keys of a split that a naming key (``protocol``) already tells apart: when every part with the same
    protocol has the same value of ``k``, ``k`` is one of the protocol's settings and the label leaves it out."""
    out: set[str] = set()
    for name in (n for n in NAMING_KEYS if extras and all(n in e for e in extras)):
        for k in set().union(*extras) - {name, *NAMING_KEYS}:
            seen: dict[str, str] = {}
            if all(seen.setdefault(str(e.get(name)), str(e.get(k))) == str(e.get(k)) for e in extras):
                out.add(k)
    return out


def paper_tables(sel: Selection, records: Sequence[RunRecord], placements: Placements, base: str, titles: tuple,
                 table, conclusions, metric: str, skip_empty_conclusions: bool = False,
                 about=None) -> list[Table]:
    """A paper table and its conclusions for each part of ``records`` (:func:`split_parts`); ``titles`` = (table
    title, conclusions title), formatted with ``label`` and ``metric``; [] when there are no records.
    ``about(part_records) -> (title suffix, notes)`` adds what a table knows of its own runs to both titles and to
    the table's notes (Bi-Real Table 1: the protocol, a one-factor design). A conclusions frame's
    ``attrs["notes"]`` (how many seeds, ``onebit.results.paired.power_notes``) become its table's notes."""
    out = []
    for part in split_parts(sel, records, placements, base) if records else []:
        suffix, notes = about(part.records) if about else ("", [])
        out.append(Table(part.name, titles[0].format(label=part.label, metric=metric) + suffix,
                         table(part.records, metric), part.notes + notes))
        found = conclusions(part.records, metric)
        if not (skip_empty_conclusions and found.empty):
            out.append(Table(f"{part.name}_conclusions", titles[1].format(label=part.label, metric=metric) + suffix,
                             found, list(found.attrs.get("notes", []))))
    return out
