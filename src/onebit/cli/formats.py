"""The paste-ready formats of onebit-tables (``onebit.cli.tables``): a table's frame as ``text``, ``markdown``,
``csv`` or ``latex``, its title and notes in the format's own syntax, printed or written one file per table.

``markdown`` is GitHub-flavoured (numbers right-aligned, ``|`` and markup escaped, a missing value ``–``);
``latex`` is a pandas Styler table (needs ``\\usepackage{booktabs}``: ``\\toprule``, ``\\midrule``,
``\\bottomrule``), names escaped, ``±`` as ``$\\pm$``, a missing value ``--``. Both show a column's decimal numbers
with one fixed number of decimals (:func:`decimals`); ``csv`` keeps them as they are.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = ("text", "markdown", "csv", "latex")
SUFFIX = {"text": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}
MISSING = {"markdown": "–", "latex": "--"}   # what a missing value (NaN, None) shows


# ----------------------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------------------


def is_missing(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


def decimals(values) -> int:
    """The fixed number of decimals of a column's decimal numbers: the fewest (1 to 3) that show each finite
    value as the frame holds it (the tables round their values: 56.4, 6.06), 3 at most."""
    floats = [float(v) for v in values if isinstance(v, (float, np.floating)) and math.isfinite(v)]
    for d in (1, 2):
        if all(abs(round(v, d) - v) <= 1e-9 * max(1.0, abs(v)) for v in floats):
            return d
    return 3


def formatter(values, escape):
    """``value -> text`` for one column: integers as they are, decimal numbers with the column's
    :func:`decimals`, anything else as ``escape(str(value))``."""
    d = decimals(values)

    def fmt(v) -> str:
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            return str(v)
        if isinstance(v, (float, np.floating)):
            return f"{v:.{d}f}"
        return escape(str(v))
    return fmt


def numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


# ----------------------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------------------


def render(df: pd.DataFrame, fmt: str, table=None) -> str:
    """The frame as ``fmt`` (``table``: its name and title, for the LaTeX caption and label)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return _markdown(df)
    if fmt == "latex":
        return _latex(df, table)
    return df.to_string(index=False)


_MD_PUNCT = re.compile(r"([\\`*_<|#~$&]|\](?=[(\[:]))")


def md_escape(text) -> str:
    """Text that GitHub markdown shows as written, on one line: a backslash before the punctuation that could
    start markup (``|`` would end a table cell, ``<absent>`` would vanish as HTML, ``](`` would make a link);
    ``_`` inside a word is left as it is (it is never emphasis there: ``magnitude_aware``)."""
    text = _MD_PUNCT.sub(r"\\\1", " ".join(str(text).splitlines()))
    return re.sub(r"(?<=[0-9A-Za-z])\\_(?=[0-9A-Za-z])", "_", text)


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no dependency on tabulate): a header row, a delimiter row (numbers
    right-aligned, text left-aligned) and one row per frame row, each with as many cells as the frame has
    columns."""
    if not len(df.columns):
        return "(no columns)\n"
    fmts = [formatter(df[c], md_escape) for c in df.columns]

    def row(cells) -> str:
        return "| " + " | ".join(cells) + " |"
    lines = [row(md_escape(c) for c in df.columns),
             row("---:" if numeric(df[c]) else ":---" for c in df.columns)]
    lines += [row(MISSING["markdown"] if is_missing(v) else f(v) for f, v in zip(fmts, values))
              for values in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
         ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$", "×": r"$\times$", "−": "$-$", "–": "--",
         "—": "---", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$", "→": r"$\rightarrow$"}


def latex_escape(text) -> str:
    """Text that LaTeX typesets as written: its special characters as commands (``_`` -> ``\\_``), ``±`` as
    ``$\\pm$`` (and a few other symbols as math), so that pdflatex needs no unicode setup."""
    return "".join(LATEX.get(c, c) for c in str(text))


def _latex(df: pd.DataFrame, table=None) -> str:
    """A booktabs table through pandas' Styler: no index, names and text cells escaped (:func:`latex_escape`),
    decimal numbers with their column's :func:`decimals`, missing values ``--``, numbers right-aligned, the title
    as ``\\caption`` and ``\\label{tab:<name>}``."""
    if not len(df.columns):
        return "% (no columns)\n"
    styler = df.style.hide(axis="index")
    styler = styler.format({c: formatter(df[c], latex_escape) for c in df.columns}, na_rep=MISSING["latex"])
    styler = styler.format_index(latex_escape, axis=1)
    extra = {} if table is None else {"caption": latex_escape(table.title), "label": f"tab:{table.name}",
                                      "position_float": "centering"}
    return styler.to_latex(hrules=True, **extra)


def heading(table, fmt: str) -> str:
    """The title and notes in the format's own comment or heading syntax (none for csv: see :func:`emit`)."""
    if fmt == "text":
        return "".join([f"== {table.title}\n", *(f"   {n}\n" for n in table.notes)])
    if fmt == "markdown":
        return "".join([f"### {md_escape(table.title)}\n\n", *(f"- {md_escape(n)}\n" for n in table.notes),
                        "\n" if table.notes else ""])
    if fmt == "latex":
        return "".join([f"% {table.title}\n", *(f"% {n}\n" for n in table.notes),
                        "% needs \\usepackage{booktabs}\n"])
    return ""


def csv_notes(table) -> None:
    """A CSV holds data only: its title and notes go to stderr."""
    for line in (table.title, *table.notes):
        print(f"onebit: {table.name}: {line}", file=sys.stderr)


def emit(table, fmt: str, out: Path | None) -> None:
    """Print ``table`` (or write ``<out>/<name>.<suffix>`` atomically); a csv keeps its title and notes out of
    the data, on stderr."""
    text = render(table.frame, fmt, table)
    text = heading(table, fmt) + (text if text.endswith("\n") else text + "\n")
    if fmt == "csv":
        csv_notes(table)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    from onebit.core.files import atomic_write_text

    path = atomic_write_text(out / f"{table.name}.{SUFFIX[fmt]}", text)
    print(f"wrote {path}")


def csv_stream(tables) -> str:
    """Every table in one CSV: a first column ``table`` (the table's name), then the union of the tables'
    columns in order of appearance (empty where a table has no such column)."""
    frames = []
    for t in tables:
        frame = t.frame.astype(object)
        frame.insert(0, "table", t.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True, sort=False).to_csv(index=False)
