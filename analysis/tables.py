"""Print the papers' tables filled with your own numbers.

    python analysis/tables.py                            # every table the records under outputs/ have data for
    python analysis/tables.py table1 --study bireal_table1 --format markdown --out analysis/example
    python analysis/tables.py study --study ftbnn_nonlinearity
    python analysis/tables.py bethge                     # Bethge et al. 2018 Tables 2-3 (sweeps=bethge2018_resnete18)
    python analysis/tables.py --source wandb --entity ME --project onebit --group bireal_table1
    python analysis/tables.py efficiency                 # Bi-Real Table 3 (no training needed)
    python analysis/tables.py efficiency --format csv    # exact counts: model,binary_params,...,ops

Cells are mean ± std over seeds (n); failed or unfinished runs are shown in the cell, never averaged in.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

FORMATS = ("text", "markdown", "csv", "latex")


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


def emit(name: str, df: pd.DataFrame, fmt: str, out: Path | None, title: str) -> None:
    text = render(df, fmt)
    if out is None:
        if fmt == "text":
            print(f"== {title}")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    out.mkdir(parents=True, exist_ok=True)
    suffix = {"text": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}[fmt]
    path = out / f"{name}.{suffix}"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"wrote {path}")


def cmd_efficiency(args) -> int:
    from onebit.efficiency import efficiency_counts, table3

    counts = efficiency_counts()
    if args.format == "csv" and args.table == "efficiency":
        emit("efficiency", counts, "csv", args.out, "")
    else:
        emit("bireal_table3", table3(counts), args.format, args.out,
             "Bi-Real Table 3: memory and OPs at 224x224 (ours | paper); see onebit/efficiency.py for the rounding")
    return 0


def load(args):
    from onebit.analysis import load_runs, load_wandb

    if args.source == "wandb":
        if not (args.entity and args.project):
            raise SystemExit("onebit: error: --source wandb needs --entity and --project")
        return load_wandb(args.entity, args.project, args.group), []
    root = Path(args.root)
    if not root.exists():
        raise FileNotFoundError(f"no run records: {root} does not exist (run python src/train.py first, or --root)")
    df, problems = load_runs(root)
    for p in problems:
        print(f"onebit: skipped {p}", file=sys.stderr)
    if df.empty:
        raise LookupError(f"no run records under {root}")
    return df, problems


def _table1_rows(df, study):
    if study:
        return df[df["study"] == study]
    return df[df["study"] == "bireal_table1"] if (df["study"] == "bireal_table1").any() else df


def cmd_table1(args) -> int:
    from onebit.analysis import conclusions, table1

    df, _ = load(args)
    rows = _table1_rows(df, args.study)
    emit("bireal_table1", table1(rows, args.metric), args.format, args.out,
         f"Bi-Real Table 1 ({args.metric}, %): ours = mean ± std over seeds (n) | paper (ImageNet top-1)")
    emit("bireal_table1_conclusions", conclusions(rows, args.metric), args.format, args.out,
         "The paper's conclusions in our data (paired differences, points; noise = 2 SE over pairs)")
    return 0


BETHGE_TITLE = ("Bethge et al. 2018 Tables 2-3, ResNetE-18 from scratch ({metric}, %): ours = mean ± std over "
                "seeds (n) | paper; scaling no/yes = weight=plain/xnor, approxsign yes/no = sign=approx/ste")
BETHGE_CONCLUSIONS_TITLE = ("Bethge et al. 2018's findings in our data (paired differences, points; noise = 2 SE "
                            "over pairs) | the paper's mean difference over the same cells")


def emit_bethge(df, args) -> None:
    from onebit.analysis import bethge_conclusions, bethge_table

    table = bethge_table(df, args.metric, args.study)
    emit("bethge2018_resnete18", table, args.format, args.out, BETHGE_TITLE.format(metric=args.metric))
    found = bethge_conclusions(df, args.metric, args.study)
    if not found.empty:  # empty when no run of the table has finished yet
        emit("bethge2018_resnete18_conclusions", found, args.format, args.out, BETHGE_CONCLUSIONS_TITLE)


def cmd_bethge(args) -> int:
    df, _ = load(args)
    emit_bethge(df, args)
    return 0


def cmd_study(args) -> int:
    from onebit.analysis import study_table

    df, _ = load(args)
    studies = [args.study] if args.study else sorted(df["study"].dropna().unique())
    for study in studies:
        emit(f"study_{study}", study_table(df, study, args.metric), args.format, args.out,
             f"study {study} ({args.metric}, %)")
    return 0


def cmd_all(args) -> int:
    from onebit.analysis import BETHGE_STUDIES, NoRunsError, conclusions, study_table, table1

    try:
        df, _ = load(args)
    except (LookupError, FileNotFoundError) as e:
        if args.source == "wandb":
            raise
        print(f"onebit: {e}; printing the tables that need no runs", file=sys.stderr)
        df = None
    if df is not None:
        rows = _table1_rows(df, args.study)
        try:
            emit("bireal_table1", table1(rows, args.metric), args.format, args.out,
                 f"Bi-Real Table 1 ({args.metric}, %): ours = mean ± std over seeds (n) | paper (ImageNet top-1)")
            emit("bireal_table1_conclusions", conclusions(rows, args.metric), args.format, args.out,
                 "The paper's conclusions in our data (paired differences, points; noise = 2 SE over pairs)")
        except NoRunsError:
            pass
        skip = {"bireal_table1"}
        if args.study is None or args.study in BETHGE_STUDIES:
            try:
                emit_bethge(df, args)
                skip |= set(BETHGE_STUDIES)
            except NoRunsError:
                pass
        for study in sorted(df["study"].dropna().unique()):
            if study in skip:
                continue
            emit(f"study_{study}", study_table(df, study, args.metric), args.format, args.out,
                 f"study {study} ({args.metric}, %)")
    return cmd_efficiency(args)


TABLES = {"all": cmd_all, "table1": cmd_table1, "bethge": cmd_bethge, "study": cmd_study,
          "efficiency": cmd_efficiency}


def main(argv=None) -> int:
    from onebit.analysis import METRICS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", default="all", choices=list(TABLES), help="which table(s) to build")
    parser.add_argument("--root", default=os.environ.get("ONEBIT_OUTPUTS", "outputs"),
                        help="directory searched for record.json files (default: outputs)")
    parser.add_argument("--source", default="local", choices=["local", "wandb"])
    parser.add_argument("--entity"), parser.add_argument("--project"), parser.add_argument("--group")
    parser.add_argument("--study", help="restrict to one study (sweep)")
    parser.add_argument("--metric", default="test/top1", choices=list(METRICS))
    parser.add_argument("--format", default="text", choices=FORMATS)
    parser.add_argument("--out", type=Path, default=None, help="write files into this directory")
    args = parser.parse_args(argv)
    try:
        return TABLES[args.table](args)
    except (LookupError, FileNotFoundError) as e:
        print(f"onebit: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
