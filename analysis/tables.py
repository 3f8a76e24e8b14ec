"""Print the papers' tables filled with your own numbers.

    python analysis/tables.py efficiency                 # Bi-Real Table 3 (no training needed)
    python analysis/tables.py efficiency --format csv    # exact counts: model,binary_params,...,ops
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

FORMATS = ("text", "markdown", "csv", "latex")


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False)
    if fmt == "latex":
        return df.to_latex(index=False)
    return df.to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


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
    if args.format == "csv":
        emit("efficiency", counts, "csv", args.out, "")
    else:
        emit("bireal_table3", table3(counts), args.format, args.out,
             "Bi-Real Table 3: memory and OPs at 224x224 (ours | paper); see onebit/efficiency.py for the rounding")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", default="efficiency", choices=["efficiency"],
                        help="which table to build")
    parser.add_argument("--format", default="text", choices=FORMATS)
    parser.add_argument("--out", type=Path, default=None, help="write files into this directory")
    args = parser.parse_args(argv)
    return {"efficiency": cmd_efficiency}[args.table](args)


if __name__ == "__main__":
    sys.exit(main())
