"""The papers' tables, each registered once (like timm's ``@register_model``): its name on the command line, the
sweep (``sweeps/<sweep>.yaml``) whose study holds its runs, its axes (option -> the values the sweep runs, which
place a run in the table), its conclusions, and the functions that build it from a selection of records.

Everything else reads this: ``tables.py``'s subcommands and ``all``, the "no runs" lines, ``plots.py``'s
conclusion figures, and the sweep files (``${onebit_axis:<table>,<option>}`` in ``sweeps/bireal_table1.yaml``
expands to the registered axis, ``${onebit_design:<table>,base|factors,<key>}`` in
``sweeps/bireal_conclusions.yaml`` to its one-factor design, ``onebit.cli.resolvers``). A new paper table is one
module in ``src/onebit/results/`` that calls :func:`register` (found by :func:`paper_tables`, which imports every
module of this package) plus one sweep file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Sequence

import onebit.results as package
from onebit.records.record import RunRecord
from onebit.results.select import Selection, Table


@dataclass(frozen=True)
class PaperTable:
    """One paper table.

    Args:
        name: its ``tables.py`` subcommand (``table1``).
        title: what it is, in one line (``Bi-Real Table 1``).
        sweep: the sweep file that runs it (``sweeps/<sweep>.yaml``; its study).
        axes: option -> the values the sweep runs (a table axis each).
        tables: ``(selection, metric) -> [Table]``: the table(s) and their conclusions for one selection.
        in_table: whether a record has a place in the table (``all`` shows the generic study table for the rest).
        conclusions: the paper's claims it tests: ``(name, option, better, worse, ...)``.
        studies: the studies ``all`` shows it for (``None``: every study).
        order: where ``all`` prints it (lower first).
        design: ``() -> {"base": {key: value}, "factors": {key: [values]}}``, its conclusions as a
            one-factor-at-a-time design (``hydra/sweeper=one_factor``), if it has one.
    """

    name: str
    title: str
    sweep: str
    axes: dict[str, tuple] = field(hash=False)
    tables: Callable[[Selection, str], list[Table]] = field(hash=False, compare=False)
    in_table: Callable[[RunRecord], bool] = field(hash=False, compare=False)
    conclusions: tuple = ()
    studies: tuple[str, ...] | None = None
    order: int = 100
    design: Callable[[], dict] | None = field(default=None, hash=False, compare=False)

    def axis(self, option: str) -> str:
        """One axis as a sweep value (``relu,clip``)."""
        if option not in self.axes:
            raise KeyError(f"table {self.name} has no axis {option!r}; its axes: {', '.join(self.axes)}")
        return ",".join(str(v) for v in self.axes[option])

    def design_value(self, part: str, key: str):
        """One value of the one-factor design: its ``base`` value or its ``factors`` list for ``key``."""
        design = self.design() if self.design else {}
        if key not in design.get(part, {}):
            raise KeyError(f"table {self.name} has no one-factor {part} {key!r}"
                           + (f"; its {part}: {', '.join(design[part])}" if part in design else ""))
        return design[part][key]

    def missing(self) -> str:
        """The line shown when no record has a place in the table."""
        axes = " x ".join(f"{k} {'|'.join(map(str, v))}" for k, v in self.axes.items())
        return f"no runs for {self.title} ({axes}: python src/train.py -m sweeps={self.sweep})"

    def shows(self, study: str | None) -> bool:
        return self.studies is None or study is None or study in self.studies


TABLES: dict[str, PaperTable] = {}


def register(table: PaperTable) -> PaperTable:
    """Add a paper table (once per name)."""
    if table.name in TABLES and TABLES[table.name] != table:
        raise ValueError(f"paper table {table.name!r} is registered twice")
    TABLES[table.name] = table
    return table


def paper_tables(package_paths: Sequence[str] | None = None) -> dict[str, PaperTable]:
    """Every registered table, in registration order: each module of ``onebit.results`` (or of
    ``package_paths``, the package's search path) is imported once, which registers its tables."""
    for module in pkgutil.iter_modules(package_paths or package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(sorted(TABLES.items(), key=lambda kv: (kv[1].order, kv[0])))


def paper_table(name: str) -> PaperTable:
    tables = paper_tables()
    if name not in tables:
        raise KeyError(f"paper table {name!r} is unknown; registered: {', '.join(tables)}")
    return tables[name]
