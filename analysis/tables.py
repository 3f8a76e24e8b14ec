"""Print the papers' tables filled with your own numbers.

    python analysis/tables.py                            # every table the records under outputs/ have data for
    python analysis/tables.py table1 --study bireal_table1 --format markdown --out analysis/example
    python analysis/tables.py study --study ftbnn_nonlinearity
    python analysis/tables.py two_step                   # one- vs two-step training (sweeps=bireal_two_step)
    python analysis/tables.py bethge                     # Bethge et al. 2018 Tables 2-3 (sweeps=bethge2018_resnete18)
    python analysis/tables.py --source wandb --entity ME --project onebit --group bireal_table1
    python analysis/tables.py efficiency                 # Bi-Real Table 3 (no training needed)
    python analysis/tables.py efficiency --format csv    # exact counts: model,binary_params,...,ops

Tables are built per study (``--all-studies`` mixes them, and says so). A cell is a set of runs identical
except for their seed (``onebit.identity.cell_key``): mean ± std over seeds (n) of the final stage's metric;
failed, running and runs without the metric are counted in the cell, never averaged. Smoke runs are left out
(``--include-smoke``), a damaged record is named on stderr and skipped, a seed run twice counts once (the
latest finished run), and a table position that would mix cells is split into one table per combination.

Exit codes: 0 ok; 1 no runs (one line); 2 bad argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

FORMATS = ("text", "markdown", "csv", "latex")
SUFFIX = {"text": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return _markdown(df)
    if fmt == "latex":
        return df.to_latex(index=False)
    return df.to_string(index=False)


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no dependency on tabulate)."""
    def cell(v):
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def heading(table, fmt: str) -> str:
    """The title and notes in the format's own comment or heading syntax (none for csv: see :func:`emit`)."""
    if fmt == "text":
        return "".join([f"== {table.title}\n", *(f"   {n}\n" for n in table.notes)])
    if fmt == "markdown":
        return "".join([f"**{table.title}**\n\n", *(f"> {n}\n" for n in table.notes), "\n" if table.notes else ""])
    if fmt == "latex":
        return "".join([f"% {table.title}\n", *(f"% {n}\n" for n in table.notes)])
    return ""


def emit(table, fmt: str, out: Path | None) -> None:
    """Print ``table`` (or write ``<out>/<name>.<suffix>`` atomically); a csv keeps its title and notes out of
    the data, on stderr."""
    text = render(table.frame, fmt)
    text = heading(table, fmt) + (text if text.endswith("\n") else text + "\n")
    if fmt == "csv":
        for line in (table.title, *table.notes):
            print(f"onebit: {table.name}: {line}", file=sys.stderr)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    from onebit.files import atomic_write_text

    path = atomic_write_text(out / f"{table.name}.{SUFFIX[fmt]}", text)
    print(f"wrote {path}")


def cmd_efficiency(args) -> int:
    from onebit.efficiency import efficiency_counts, table3
    from onebit.results.select import Table

    counts = efficiency_counts()
    if args.format == "csv" and args.table == "efficiency":
        emit(Table("efficiency", "Bi-Real Table 3: exact counts", counts), "csv", args.out)
    else:
        emit(Table("bireal_table3", "Bi-Real Table 3: memory and OPs at 224x224 (ours | paper); see "
                   "onebit/efficiency.py for the rounding", table3(counts)), args.format, args.out)
    return 0


def selections(args, studies=None):
    """The loaded runs, per study (``onebit.results.select``); a study left empty (only smoke runs) is named."""
    from onebit.results.load import load_records, load_wandb
    from onebit.results.select import select

    if args.source == "wandb":
        if not (args.entity and args.project):
            raise SystemExit("onebit: error: --source wandb needs --entity and --project")
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


def _emit_all(tables, args, nothing: str) -> int:
    from onebit.results.load import NoRunsError

    if not tables:
        raise NoRunsError(nothing)
    for t in tables:
        emit(t, args.format, args.out)
    return 0


def cmd_table1(args) -> int:
    from onebit.results import bireal

    tables = [t for sel in selections(args) for t in bireal.tables(sel, args.metric)]
    return _emit_all(tables, args, "no runs for Bi-Real Table 1 (options pretrain relu|clip x weight "
                                   "plain|magnitude_aware x sign ste|approx x structure bireal|res|plain)")


def cmd_bethge(args) -> int:
    from onebit.results import bethge

    tables = [t for sel in selections(args, bethge.STUDIES) for t in bethge.tables(sel, args.metric)]
    return _emit_all(tables, args, f"no runs for Bethge et al. 2018 Tables 2-3 (studies {', '.join(bethge.STUDIES)}"
                                   ", or --study: weight plain|xnor x model.downsample binary|full_precision x "
                                   "sign ste|approx)")


def cmd_two_step(args) -> int:
    from onebit.results import two_step

    tables = [t for sel in selections(args) for t in two_step.tables(sel, args.metric)]
    return _emit_all(tables, args, "no runs for the two-step table (recipe=two_step beside recipe=one_step: "
                                   "python src/train.py -m sweeps=bireal_two_step)")


def cmd_study(args) -> int:
    from onebit.results import study

    return _emit_all([t for sel in selections(args) for t in study.tables(sel, args.metric)], args, "no runs")


def cmd_all(args) -> int:
    """Per study: Bi-Real Table 1, the two-step table and Bethge et al. 2018 where it has their runs (Bethge only
    for its studies, unless --study or --all-studies), the generic study table for the runs in neither; then
    Table 3."""
    from onebit.results import bethge, bireal, study, two_step
    from onebit.results.load import NoRunsError

    try:
        sels = selections(args)
    except NoRunsError as e:
        if args.source == "wandb":
            raise
        print(f"onebit: {e}; printing the tables that need no runs", file=sys.stderr)
        sels = []
    for sel in sels:
        tables = bireal.tables(sel, args.metric) + two_step.tables(sel, args.metric)
        placed = [bireal.in_table, two_step.in_table]
        if sel.study is None or sel.study in bethge.STUDIES or args.study:
            tables += bethge.tables(sel, args.metric)
            placed.append(lambda r: bethge.position(r) is not None)
        if any(not any(p(r) for p in placed) for r in sel.records):
            tables += study.tables(sel, args.metric)
        for t in tables:
            emit(t, args.format, args.out)
    return cmd_efficiency(args)


TABLES = {"all": cmd_all, "table1": cmd_table1, "two_step": cmd_two_step, "bethge": cmd_bethge, "study": cmd_study,
          "efficiency": cmd_efficiency}


def main(argv=None) -> int:
    from onebit.results.cells import METRICS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", default="all", choices=list(TABLES), help="which table(s) to build")
    parser.add_argument("--root", default=os.environ.get("ONEBIT_OUTPUTS", "outputs"),
                        help="directory searched for record.json files (default: outputs)")
    parser.add_argument("--source", default="local", choices=["local", "wandb"])
    parser.add_argument("--entity"), parser.add_argument("--project"), parser.add_argument("--group")
    parser.add_argument("--study", help="only this study (default: one table per study)")
    parser.add_argument("--all-studies", action="store_true", help="mix every study in one table (the title says so)")
    parser.add_argument("--include-smoke", action="store_true",
                        help="include smoke runs (cut short by a Trainer limit; the title says so)")
    parser.add_argument("--metric", default="test/top1", choices=list(METRICS))
    parser.add_argument("--format", default="text", choices=FORMATS)
    parser.add_argument("--out", type=Path, default=None, help="write files into this directory")
    args = parser.parse_args(argv)
    if args.study and args.all_studies:
        parser.error("--study and --all-studies exclude each other")
    try:
        return TABLES[args.table](args)
    except LookupError as e:
        print(f"onebit: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
