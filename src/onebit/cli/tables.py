"""onebit-tables (``python analysis/tables.py``): print the papers' tables filled with your own numbers.

    python analysis/tables.py                            # every table the records under the root have data for
    python analysis/tables.py table1 --study bireal_table1 --format markdown --out analysis/example
    python analysis/tables.py study --study ftbnn_nonlinearity
    python analysis/tables.py two_step                   # one- vs two-step training (sweeps=bireal_two_step)
    python analysis/tables.py bethge                     # Bethge et al. 2018 Tables 2-3 (sweeps=bethge2018_resnete18)
    python analysis/tables.py effects --study S          # main effects and two-way interactions (OLS, seed block,
                                                         # Holm) + interaction plot <root>/figures/effects-S.png
    python analysis/tables.py --source wandb --entity ME --project onebit --group bireal_table1
    python analysis/tables.py efficiency                 # Bi-Real Table 3 (no training needed)
    python analysis/tables.py efficiency --format csv    # exact counts: table,model,binary_params,...,ops
    python analysis/tables.py efficiency --measured RUN [RUN ...]  # + size and latency of exported models
    python analysis/tables.py --format markdown > tables.md    # a `### title` and its notes above each GFM table
    python analysis/tables.py --format csv > tables.csv  # one CSV; its first column `table` names each row's table
    python analysis/tables.py --format csv --out DIR     # one CSV per table (titles and notes on stderr)
    python analysis/tables.py table1 --format latex --out paper/  # booktabs, \\caption, \\label{tab:<name>}
    python analysis/tables.py --to-wandb                 # also log each table to W&B (a run per study, offline)

Tables are built per study (``--all-studies`` mixes them, and says so). A cell is a set of runs identical
except for their seed (``onebit.records.identity.cell_key``): mean ± std over seeds (n) of the final stage's metric;
failed, running and runs without the metric are counted in the cell, never averaged. Smoke runs are left out
(``--include-smoke``), a damaged record is named on stderr and skipped, a seed run twice counts once (the
latest finished run), and a table position that would mix cells is split into one table per combination.

Formats: ``markdown`` is GitHub-flavoured (numbers right-aligned, ``|`` and markup escaped, a missing value
``–``); ``latex`` is a pandas Styler table (needs ``\\usepackage{booktabs}``: ``\\toprule``, ``\\midrule``,
``\\bottomrule``), names escaped, ``±`` as ``$\\pm$``, a missing value ``--``. Both show a column's decimal numbers
with one fixed number of decimals (:func:`decimals`); ``csv`` keeps them as they are (``onebit.cli.formats``).

``--to-wandb`` logs every printed table as a ``wandb.Table`` (key = the table's name, its title and notes in the
run's config) to a W&B run of its own, ``job_type=tables``, one run per study (``group`` = the study, as the
study's training runs; ``all-studies`` for mixed studies, ``efficiency`` for Bi-Real Table 3, which needs no
runs). Project: ``--project``, else ``WANDB_PROJECT``, else ``onebit``; entity: ``--entity`` or ``WANDB_ENTITY``;
offline unless ``WANDB_MODE`` says otherwise, under ``<root>/tables_wandb/`` (upload with ``onebit-sync``).

The root (``--root``) defaults to ``$ONEBIT_OUTPUTS``, else ``outputs`` (``onebit.core.paths.output_root``), as
for every onebit command. Exit codes: 0 ok; 1 no runs, a root that does not exist (every command that reads runs;
``all`` prints the tables that need no runs only under a root without any), or W&B could not take the tables (one
line); 2 bad argument (one ``onebit: error:`` line). :func:`main` returns the exit status: callable in-process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from onebit.cli.formats import (  # noqa: F401  (re-exported: the formats are part of the tables command)
    FORMATS,
    MISSING,
    SUFFIX,
    csv_notes,
    csv_stream,
    decimals,
    emit,
    heading,
    is_missing,
    latex_escape,
    md_escape,
    numeric,
    render,
)
from onebit.cli.runs import Parser, find_record, run_main
from onebit.core.errors import ConfigError, cause_line
from onebit.core.paths import output_root
from onebit.core.registry import DEFAULT_METRIC, METRICS
from onebit.results.registry import paper_tables

ALL_STUDIES = "all-studies"                  # the W&B group of tables that mix studies
NO_STUDY = "efficiency"                      # the W&B group of tables that need no runs (Bi-Real Table 3)


class WandbError(LookupError):
    """W&B could not take the tables: one ``onebit: error:`` line, exit 1."""


def output(pairs, args) -> int:
    """Print (or write) every table of ``pairs`` [(W&B group, Table)], then log them to W&B if asked."""
    tables = [t for _, t in pairs]
    if args.format == "csv" and args.out is None:
        for t in tables:
            csv_notes(t)
        sys.stdout.write(csv_stream(tables))
    else:
        for t in tables:
            emit(t, args.format, args.out)
    if args.to_wandb:
        to_wandb(pairs, args)
    return 0


# ----------------------------------------------------------------------------------------------------------
# W&B
# ----------------------------------------------------------------------------------------------------------


def wandb_table(frame: pd.DataFrame):
    """The frame as a ``wandb.Table``: the same columns and rows, missing values as None."""
    import wandb

    def plain(v):
        return None if is_missing(v) else v.item() if isinstance(v, np.generic) else v
    rows = [[plain(v) for v in values] for values in frame.itertuples(index=False)]
    return wandb.Table(columns=[str(c) for c in frame.columns], data=rows, allow_mixed_types=True)


def to_wandb(pairs, args) -> None:
    """Log the tables to W&B, one run per group (see the module docstring); says on stderr where they went.
    Online without credentials, or online W&B not answering, logs offline instead
    (``onebit.tracking.wandb_run.start_wandb``:
    W&B never prompts)."""
    import wandb

    from onebit.tracking.wandb_run import start_wandb, wandb_defaults

    defaults = wandb_defaults()  # conf/logger/wandb.yaml: WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE or its defaults
    if defaults["mode"] == "disabled":
        print("onebit: W&B: WANDB_MODE=disabled, the tables were not logged", file=sys.stderr)
        return
    where = Path(args.root) / "tables_wandb"
    where.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list] = {}
    for group, t in pairs:
        groups.setdefault(group, []).append(t)
    offline = False
    for group, tables in groups.items():
        kwargs = {"project": args.project or defaults["project"], "entity": args.entity or defaults["entity"],
                  "mode": defaults["mode"], "group": group, "job_type": "tables", "name": f"tables-{group}",
                  "dir": str(where), "reinit": "finish_previous", "settings": wandb.Settings(init_timeout=30),
                  "config": {"study": group, "tables": {t.name: {"title": t.title, "notes": list(t.notes)}
                                                        for t in tables}}}
        try:
            run = start_wandb(lambda kw: wandb.init(**kw), kwargs)
        except Exception as e:  # noqa: BLE001 - W&B raises many types when it cannot start
            raise WandbError(f"W&B could not start a run in {where}: {cause_line(e)}") from None
        run.log({t.name: wandb_table(t.frame) for t in tables})
        url, sync_dir, run_mode = run.url, run.settings.sync_dir, run.settings.mode
        run.finish()
        names = ", ".join(t.name for t in tables)
        if run_mode == "offline":
            offline = True
            print(f"onebit: W&B: {len(tables)} table(s) of group {group} ({names}) logged offline to {sync_dir}",
                  file=sys.stderr)
        else:
            print(f"onebit: W&B: {len(tables)} table(s) of group {group} ({names}) logged to {url}",
                  file=sys.stderr)
    if offline:
        print(f"onebit: W&B: upload with: onebit-sync --root {args.root}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def group_of(sel) -> str:
    """The W&B group of a selection's tables: its study, or ``all-studies``."""
    return sel.study or ALL_STUDIES


def cmd_efficiency(args) -> list:
    from onebit.nn.efficiency import efficiency_counts, table3
    from onebit.results.select import Table

    counts = efficiency_counts()
    if args.format == "csv" and args.table == "efficiency":
        tables = [(NO_STUDY, Table("efficiency", "Bi-Real Table 3: exact counts", counts))]
    else:
        tables = [(NO_STUDY, Table("bireal_table3", "Bi-Real Table 3: memory and OPs at 224x224 (ours | paper); "
                                   "see onebit/efficiency.py for the rounding", table3(counts)))]
    return tables + measured(args)


def measured(args) -> list:
    """``--measured RUN...``: Table 3 measured on the runs' exported models (``onebit-export``)."""
    if not getattr(args, "measured", None):
        return []
    from onebit.nn.efficiency import measured_notes, measured_table
    from onebit.results.select import Table

    records = []
    for run in args.measured:
        try:
            record = find_record(run)
        except ConfigError as e:
            raise LookupError(str(e)) from None
        if not record.export:
            raise LookupError(f"run {run} has no exported model: onebit-export {run}")
        records.append(record)
    smoke = [r.run_id for r in records if r.smoke]
    smoke_note = (f"smoke runs (weights from a shortened run; size and latency do not depend on them): "
                  f"{', '.join(smoke)}")
    notes = measured_notes(records) + ([smoke_note] if smoke else [])
    return [(NO_STUDY, Table("bireal_table3_measured", "Bi-Real Table 3 measured: exported 1-bit models (LCE .tflite) "
                             "beside their counts and their real-valued twins (float .tflite)",
                             measured_table(records), notes))]


def selections(args, studies=None):
    """The loaded runs, per study (``onebit.results.select``); a study left empty (only smoke runs) is named."""
    from onebit.results.load import load_records, load_wandb
    from onebit.results.select import select

    if args.source == "wandb":
        records, _ = load_wandb(args.entity, args.project, args.group)
    else:
        records, _ = load_records(args.root)
    if studies is not None and args.study is None and not args.all_studies:
        records = [r for r in records if r.study in studies] or records
    sels = select(records, args.study, args.all_studies, args.include_smoke)
    for sel in sels:
        if not sel.records:
            print(f"onebit: {sel.label}: no runs to show ({' '.join(sel.notes)})", file=sys.stderr)
    return sels


def _found(pairs, nothing: str) -> list:
    from onebit.results.load import NoRunsError

    if not pairs:
        raise NoRunsError(nothing)
    return pairs


def cmd_paper(name: str):
    """The subcommand of one registered paper table (``onebit.results.registry``): its tables per selection of its
    studies (every study when it names none), or one "no runs" line naming its axes and its sweep."""

    def cmd(args) -> list:
        table = paper_tables()[name]
        return _found([(group_of(sel), t) for sel in selections(args, table.studies)
                       for t in table.tables(sel, args.metric)], table.missing())

    cmd.__doc__ = f"the {name} table"
    return cmd


def cmd_study(args) -> list:
    from onebit.results import study

    return _found([(group_of(sel), t) for sel in selections(args) for t in study.tables(sel, args.metric)],
                  "no runs")


def cmd_all(args) -> list:
    """Per study: every registered paper table (``onebit.results.registry``, in its order) that has runs there (a
    table that names its studies only for those, unless --study or --all-studies), the generic study table for the
    runs in none of them; then Table 3."""
    from onebit.results import study
    from onebit.results.load import NoRunsError

    try:
        sels = selections(args)
    except NoRunsError as e:
        if args.source == "wandb" or not Path(args.root).is_dir():  # a root that is not there: one line, exit 1
            raise
        print(f"onebit: {e}; printing the tables that need no runs", file=sys.stderr)
        sels = []
    pairs = []
    for sel in sels:
        shown = [t for t in paper_tables().values() if args.study or t.shows(sel.study)]
        tables = [table for t in shown for table in t.tables(sel, args.metric)]
        if any(not any(t.in_table(r) for t in shown) for r in sel.records):
            tables += study.tables(sel, args.metric)
        pairs += [(group_of(sel), t) for t in tables]
    return pairs + cmd_efficiency(args)


def cmd_effects(args) -> list:
    """Per study: main effects and two-way interactions (``onebit.results.effects``), and their interaction plot
    (``onebit.figures.effects``) written into ``--out``, else ``<root>/figures``, as ``effects-<study>.png``."""
    from onebit.figures.effects import plot_effects
    from onebit.results import effects

    pairs = []
    for sel in selections(args):
        if not sel.records:
            continue
        found = effects.effects(sel, args.metric)
        pairs += [(group_of(sel), t) for t in found.tables()]
        path = plot_effects(found, Path(args.out or Path(args.root) / "figures") / f"{found.name}.png")
        print(f"onebit: wrote {path}" if path else f"onebit: {found.name}: no interaction plot (nothing estimable)",
              file=sys.stderr)
    return _found(pairs, "no runs")


def commands() -> dict:
    """The subcommands: ``all``, one per registered paper table (read when asked, so a table registered by a
    module added to ``onebit.results`` is one), ``study``, ``effects`` and ``efficiency``."""
    return {"all": cmd_all, **{name: cmd_paper(name) for name in paper_tables()}, "study": cmd_study,
            "effects": cmd_effects, "efficiency": cmd_efficiency}


def parser() -> Parser:
    p = Parser(prog="onebit-tables", description=__doc__)
    p.add_argument("table", nargs="?", default="all", choices=list(commands()), help="which table(s) to build")
    p.add_argument("--root", default=output_root(),
                   help="directory searched for record.json files (default: $ONEBIT_OUTPUTS, else outputs)")
    p.add_argument("--source", default="local", choices=["local", "wandb"])
    p.add_argument("--entity", help="W&B entity (--source wandb, --to-wandb; default: WANDB_ENTITY)")
    p.add_argument("--project", help="W&B project (--source wandb, --to-wandb; default: WANDB_PROJECT or onebit)")
    p.add_argument("--group", help="W&B group to read (--source wandb)")
    p.add_argument("--study", help="only this study (default: one table per study)")
    p.add_argument("--all-studies", action="store_true", help="mix every study in one table (the title says so)")
    p.add_argument("--include-smoke", action="store_true",
                   help="include smoke runs (cut short by a Trainer limit; the title says so)")
    p.add_argument("--metric", default=DEFAULT_METRIC, choices=list(METRICS))
    p.add_argument("--format", default="text", choices=FORMATS)
    p.add_argument("--out", type=Path, default=None, help="write files into this directory")
    p.add_argument("--measured", nargs="+", metavar="RUN",
                   help="efficiency: also Table 3 measured on these runs' exported models (onebit-export)")
    p.add_argument("--to-wandb", action="store_true",
                   help="also log each table as a wandb.Table to a W&B run of its own per study (job_type "
                        "tables; offline under <root>/tables_wandb unless WANDB_MODE says otherwise)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``onebit-tables argv`` and return its exit status. With ``argv=None`` (the process's own command line:
    ``onebit-tables``, ``python analysis/tables.py``) a failed W&B read leaves the process at once (``os._exit``):
    wandb's exit hook could wait minutes on its busy service process; a caller that passes ``argv`` gets 1."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        p = parser()
        args = p.parse_args(argv)
        if args.study and args.all_studies:
            p.error("--study and --all-studies exclude each other")
        if args.source == "wandb" and not (args.entity and args.project):
            p.error("--source wandb needs --entity and --project")
        try:
            return output(commands()[args.table](args), args)
        except LookupError as e:
            print(f"onebit: error: {e.args[0] if e.args else e}", file=sys.stderr)
            if program and args.source == "wandb" and "wandb" in sys.modules:
                # a W&B API that failed can leave wandb's service process busy, and its exit hook then waits on
                # it for minutes after the error is printed: the error is the whole result, so leave without it
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(1)
            return 1

    return run_main(body)
