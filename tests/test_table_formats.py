"""analysis/tables.py's paste-ready formats and ``--to-wandb``: markdown checked by a strict GitHub-flavoured
table parser, the csv stream and files read back with pandas, LaTeX checked for its structure (and compiled when
pdflatex exists), and the W&B run's files (table json, the run record of the .wandb log) read back. Real tables:
the committed Fashion-MNIST records (analysis/example/records) and records written by ``make_record``; crafted
tables carry the characters that break formats (``|``, ``<absent>``, ``_``, ``%``, ``&``, ``#``, missing values)."""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import ROOT, complete_wandb_log, run_cli
from test_results import make_record

import onebit.cli.tables as T
from onebit.cli.tables import main as tables
from onebit.results.select import Table

EXAMPLE = ROOT / "analysis" / "example" / "records"


@functools.cache
def _expected(table: str, root: str, kw: tuple) -> list:
    args = {"table": table, "root": root, "source": "local", "study": None, "all_studies": False,
            "include_smoke": False, "metric": "test/top1", "format": "text", "out": None, "entity": None,
            "project": None, "group": None, "to_wandb": False}
    return T.commands()[table](argparse.Namespace(**{**args, **dict(kw)}))


def expected(table: str = "all", root=EXAMPLE, **kw) -> list:
    """[(W&B group, Table)] as tables.py builds them, to compare the printed output with (built once: Bi-Real
    Table 3 takes a while)."""
    return _expected(table, str(root), tuple(sorted(kw.items())))


def odd_table() -> Table:
    """A table with every character that breaks one of the formats, and missing values of each kind."""
    frame = pd.DataFrame({
        "name|pipe_col": pd.array(["a|b", "<absent>", None, "x\\y", "_target_"], dtype="string"),
        "50% & #1": [1.5, math.nan, 2.25, 3.0, -0.5],
        "n": [1, 2, 3, 4, 5],
        "cell": ["56.4 ± 0.3 (n=3)", "*bold*", "", "[a](b)", "magnitude_aware"]})
    return Table("odd_table", "Odd | title: <absent>, _x_, 100% & #2 ± 1", frame, ["note with `code` and *stars*"])


def same(shown, value) -> bool:
    """A printed (or read back) cell is the frame's value: both missing, equal numbers, or equal text."""
    if T.is_missing(value) or T.is_missing(shown):
        return T.is_missing(value) and T.is_missing(shown)
    try:
        return math.isclose(float(shown), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(shown) == str(value)


# ----------------------------------------------------------------------------------------------------------
# markdown: a strict GitHub-flavoured table parser
# ----------------------------------------------------------------------------------------------------------

PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def tokens(text: str) -> list[tuple[str, bool]]:
    """(character, escaped) pairs: GFM's backslash escapes any ASCII punctuation (and nothing else)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in PUNCT:
            out.append((text[i + 1], True))
            i += 2
        else:
            out.append((text[i], False))
            i += 1
    return out


def inline(text: str) -> str:
    """What GitHub shows for ``text``, checked to hold no markup: no unescaped ``| < * ` $ &``, no ``](``,
    ``][`` or ``]:`` (a link), ``_`` only inside a word."""
    toks = tokens(text)
    for k, (c, escaped) in enumerate(toks):
        if escaped:
            continue
        assert c not in "|<*`$&", f"unescaped {c!r} in {text!r}"
        assert not (c == "]" and k + 1 < len(toks) and toks[k + 1][0] in "([:"), f"a link in {text!r}"
        if c == "_":
            before, after = toks[k - 1][0] if k else " ", toks[k + 1][0] if k + 1 < len(toks) else " "
            assert before.isalnum() and after.isalnum(), f"'_' outside a word in {text!r}"
    return "".join(c for c, _ in toks)


def row_cells(line: str) -> list[str]:
    """The cells of a table row (split at unescaped pipes, cmark-gfm's rule), the row fenced by pipes."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, cur = [], ""
    for c, escaped in tokens(line[1:-1]):
        if c == "|" and not escaped:
            cells.append(cur)
            cur = ""
        else:
            cur += "\\" + c if escaped else c
    return [c.strip() for c in [*cells, cur]]


DELIMITER = re.compile(r"^\|(?: (?::?-{3,}:?) \|)+$")


def parse_markdown(text: str) -> list[dict]:
    """Sections ``### title`` / blank / notes (``- note`` lines, then blank) / table / blank; anything else fails.
    Returns per section its title, notes, header, alignments and rows (as shown)."""
    lines, i, out = text.split("\n"), 0, []
    while i < len(lines) and lines[i] == "":
        i += 1
    while i < len(lines):
        assert lines[i].startswith("### ") and lines[i][4:].strip(), f"line {i}: not a heading: {lines[i]!r}"
        sec = {"title": inline(lines[i][4:]), "notes": []}
        assert lines[i + 1] == "", f"line {i + 1}: a heading is followed by a blank line"
        i += 2
        while lines[i].startswith("- "):
            sec["notes"].append(inline(lines[i][2:]))
            i += 1
        if sec["notes"]:
            assert lines[i] == "", f"line {i}: notes end with a blank line"
            i += 1
        header = row_cells(lines[i])
        assert DELIMITER.match(lines[i + 1]), f"line {i + 1}: not a delimiter row: {lines[i + 1]!r}"
        delim = row_cells(lines[i + 1])
        assert len(delim) == len(header), f"line {i + 1}: {len(delim)} delimiter cells for {len(header)} columns"
        sec["header"] = [inline(c) for c in header]
        sec["align"] = ["right" if d.endswith(":") and not d.startswith(":") else "left" for d in delim]
        sec["rows"], i = [], i + 2
        while i < len(lines) and lines[i].startswith("|"):
            cells = row_cells(lines[i])
            assert len(cells) == len(header), f"line {i}: {len(cells)} cells for {len(header)} columns"
            sec["rows"].append([inline(c) for c in cells])
            i += 1
        out.append(sec)
        assert i == len(lines) or lines[i] == "", f"line {i}: a table ends with a blank line"
        while i < len(lines) and lines[i] == "":
            i += 1
    return out


def check_section(sec: dict, table: Table) -> None:
    """A parsed section is ``table``: title, notes, columns, numbers right-aligned, every cell, one number of
    decimals per column, missing values as ``–``."""
    frame = table.frame
    assert sec["title"] == table.title and sec["notes"] == list(table.notes)
    assert sec["header"] == [str(c) for c in frame.columns]
    assert sec["align"] == ["right" if T.numeric(frame[c]) else "left" for c in frame.columns]
    assert len(sec["rows"]) == len(frame)
    for j, col in enumerate(frame.columns):
        shown = [row[j] for row in sec["rows"]]
        for s, v in zip(shown, frame[col]):
            assert (s == "–") if T.is_missing(v) else same(s, v), (table.name, col, s, v)
        places = {len(s.split(".")[1]) for s, v in zip(shown, frame[col]) if isinstance(v, (float, np.floating))
                  and not T.is_missing(v)}
        assert len(places) <= 1, (table.name, col, shown)


def test_markdown_every_table_titled_separated_valid(tmp_path):
    pairs = expected()
    r = run_cli(tables, ["--root", EXAMPLE, "--format", "markdown"])
    assert r.returncode == 0, r.stderr
    sections = parse_markdown(r.stdout)
    assert len(sections) == len(pairs) == 5  # 2 protocols x (Table 1 + conclusions), Table 3
    for sec, (_, table) in zip(sections, pairs):
        check_section(sec, table)
    sgd = sections[3]
    assert sgd["title"].startswith("Bi-Real Table 1's conclusions in our data, study bireal_conclusions "
                                   "[protocol=paper_sgd]")
    assert sgd["rows"][0] == ["shortcut > none", "17.46", "[10.73, 24.18]", "–", "3", "1.00", "0.024", "44.3",
                              "supported"]
    # the example: +0.17 points over 3 seeds is not evidence that ApproxSign beats STE
    assert sgd["rows"][1] == ["ApproxSign > STE", "0.17", "[-0.50, 0.83]", "–", "3", "0.67", "0.79", "2.8",
                              "inconclusive"]
    assert "Holm-adjusted" in sgd["title"] and not any("seed noise" in s["title"] for s in sections)
    assert [row[1] for row in sections[1]["rows"]] == ["6.06", "-0.60", "0.00", "1.85"]  # one precision a column
    # --out: one file per table, each a titled section of its own
    r = run_cli(tables, ["table1", "--root", EXAMPLE, "--format", "markdown", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    for _, table in pairs[:4]:
        (sec,) = parse_markdown((tmp_path / f"{table.name}.md").read_text())
        check_section(sec, table)


def test_markdown_escapes_what_breaks_a_table():
    table = odd_table()
    (sec,) = parse_markdown(T.heading(table, "markdown") + T.render(table.frame, "markdown"))
    check_section(sec, table)  # every cell, title and note reads back as written, no unescaped markup
    assert [row[0] for row in sec["rows"]] == ["a|b", "<absent>", "–", "x\\y", "_target_"]
    assert [row[1] for row in sec["rows"]] == ["1.50", "–", "2.25", "3.00", "-0.50"]
    assert sec["rows"][2][3] == "" and sec["align"] == ["left", "right", "right", "left"]
    assert "magnitude_aware" in T.render(table.frame, "markdown")  # `_` inside a word stays readable


# ----------------------------------------------------------------------------------------------------------
# csv
# ----------------------------------------------------------------------------------------------------------


def check_rows(read: pd.DataFrame, table: Table) -> None:
    assert len(read) == len(table.frame), table.name
    for col in table.frame.columns:
        for got, want in zip(read[col], table.frame[col]):
            assert same(got, want), (table.name, col, got, want)


def test_csv_one_stream_with_a_table_column_and_one_file_per_table(tmp_path):
    pairs = expected()
    r = run_cli(tables, ["--root", EXAMPLE, "--format", "csv"])
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout))
    union = list(dict.fromkeys(str(c) for _, t in pairs for c in t.frame.columns))
    assert list(df.columns) == ["table", *union]
    assert list(dict.fromkeys(df["table"])) == [t.name for _, t in pairs]
    for _, table in pairs:
        check_rows(df[df["table"] == table.name].reset_index(drop=True), table)
        assert f"onebit: {table.name}: {table.title}" in r.stderr  # titles and notes stay out of the data
    adam = df[df["table"] == "bireal_table1-bireal_conclusions-protocol=official_adam_conclusions"]
    assert adam.set_index("conclusion").loc["shortcut > none", "ours (points)"] == pytest.approx(6.06)
    assert df[df["table"] == "bireal_table3"].set_index("model").loc["Bi-Real-18", "memory_mbit"] == \
        pytest.approx(33.51)
    r = run_cli(tables, ["table1", "--root", EXAMPLE, "--format", "csv", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t.name}.csv" for _, t in pairs[:4])
    for _, table in pairs[:4]:
        read = pd.read_csv(tmp_path / f"{table.name}.csv")
        assert list(read.columns) == [str(c) for c in table.frame.columns]
        check_rows(read, table)


# ----------------------------------------------------------------------------------------------------------
# LaTeX
# ----------------------------------------------------------------------------------------------------------


def latex_units(text: str) -> list[str]:
    """Commands (``\\name``), escaped characters (``\\_``) and single characters of ``text``."""
    return re.findall(r"\\[A-Za-z]+|\\.|.", text, flags=re.DOTALL)


def check_latex(tex: str, table: Table) -> None:
    """Structure of a Styler booktabs table: comments, caption, label, column spec, rules, escaped cells."""
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    text = "\n".join(body)
    depth = 0
    for unit in latex_units(text):
        depth += {"{": 1, "}": -1}.get(unit, 0)
        assert depth >= 0, "a '}' closes nothing"
    assert depth == 0, "unbalanced braces"
    assert [text.count(r) for r in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 1, 1]
    assert f"\\label{{tab:{table.name}}}" in text and "\\caption{" in text
    (spec,) = re.findall(r"\\begin\{tabular\}\{([a-z]+)\}", text)
    assert spec == "".join("r" if T.numeric(table.frame[c]) else "l" for c in table.frame.columns)
    head, rows = text.split("\\toprule\n")[1].split("\\midrule\n")
    rows = rows.split("\\bottomrule")[0].strip().splitlines()
    assert len(rows) == len(table.frame)
    for line in [head.strip(), *rows]:
        assert line.endswith("\\\\")
        units = latex_units(line[:-2])
        assert units.count("&") == len(table.frame.columns) - 1, line  # one unescaped & between cells
        for bad in "_%#±<>|":
            assert bad not in units, f"unescaped {bad!r} in {line!r}"
    outside = re.sub(r"\\label\{[^}]*\}", "", text)
    assert "_" not in latex_units(outside) and "±" not in outside
    for j, col in enumerate(table.frame.columns):
        for line, v in zip(rows, table.frame[col]):
            cell = re.split(r"(?<!\\)&", line[:-2])[j].strip()
            if T.is_missing(v):
                assert cell == "--", (col, cell)
            elif isinstance(v, (float, np.floating)):
                assert cell == f"{v:.{T.decimals(table.frame[col])}f}", (col, cell)


def test_latex_booktabs_escaped_fixed_precision_missing(tmp_path):
    table = odd_table()
    tex = T.heading(table, "latex") + T.render(table.frame, "latex", table)
    check_latex(tex, table)
    assert "\\begin{tabular}{lrrl}" in tex and "\\label{tab:odd_table}" in tex
    assert "\\caption{Odd \\textbar{} title: \\textless{}absent\\textgreater{}, \\_x\\_, 100\\% \\& \\#2 $\\pm$ 1}" \
        in tex
    assert "name\\textbar{}pipe\\_col & 50\\% \\& \\#1 & n & cell \\\\" in tex
    assert "\\textless{}absent\\textgreater{} & -- & 2 & *bold* \\\\" in tex
    assert "-- & 2.25 & 3 &  \\\\" in tex and "56.4 $\\pm$ 0.3 (n=3)" in tex and "magnitude\\_aware" in tex
    pairs = expected("table1")
    r = run_cli(tables, ["table1", "--root", EXAMPLE, "--format", "latex", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    for _, t in pairs:
        tex = (tmp_path / f"{t.name}.tex").read_text()
        assert tex.startswith(f"% {t.title}\n") and "% needs \\usepackage{booktabs}" in tex
        check_latex(tex, t)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (apt-get install "
                    "texlive-latex-base texlive-latex-recommended); the LaTeX structure is checked without it")
def test_latex_compiles(tmp_path):
    pairs = expected()
    parts = [T.heading(t, "latex") + T.render(t.frame, "latex", t) for _, t in pairs]
    parts.append(T.render(odd_table().frame, "latex", odd_table()))
    doc = tmp_path / "tables.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + "\n".join(parts)
                   + "\n\\end{document}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert (tmp_path / "tables.pdf").stat().st_size > 0 and "Missing character" not in log
    assert len(re.findall(r"\\begin\{tabular\}", doc.read_text())) == len(pairs) + 1


# ----------------------------------------------------------------------------------------------------------
# --to-wandb
# ----------------------------------------------------------------------------------------------------------


def wandb_runs(root) -> dict:
    """group -> (run record, config dict, {table key: table json}) of each offline run under root/tables_wandb."""
    out = {}
    for run_dir in sorted((root / "tables_wandb" / "wandb").glob("offline-run-*")):
        (log,) = run_dir.glob("run-*.wandb")
        (run,) = [r.run for r in complete_wandb_log(log) if r.WhichOneof("record_type") == "run"]
        config = {c.key: json.loads(c.value_json) for c in run.config.update}
        files = {}
        for f in (run_dir / "files" / "media" / "table").glob("*.table.json"):
            files[re.sub(r"_\d+_[0-9a-f]+\.table\.json$", "", f.name)] = json.loads(f.read_text())
        assert run.run_group not in out, f"two runs of group {run.run_group}"
        out[run.run_group] = (run, config, files)
    return out


def check_logged(logged: dict, printed: pd.DataFrame, pairs: list) -> None:
    """Each table of ``pairs`` is in its group's run: the printed columns and rows, title and notes in config."""
    for group, table in pairs:
        run, config, files = logged[group]
        assert run.job_type == "tables" and config["study"] == group
        assert config["tables"][table.name] == {"title": table.title, "notes": list(table.notes)}
        got = files[table.name]
        assert got["columns"] == [str(c) for c in table.frame.columns]
        rows = printed[printed["table"] == table.name]
        assert len(got["data"]) == len(rows) == len(table.frame)
        for j, col in enumerate(got["columns"]):
            for row, shown in zip(got["data"], rows[col]):
                assert same(row[j], shown), (table.name, col, row[j], shown)
    assert sorted(logged) == sorted({g for g, _ in pairs})
    for group in logged:  # one run per group, holding exactly that group's tables
        assert sorted(logged[group][2]) == sorted(t.name for g, t in pairs if g == group)


def test_to_wandb_one_offline_run_per_study_with_its_tables(tmp_path):
    env = {k: None for k in os.environ if k.startswith("WANDB_")}  # unset for the call: W&B's own defaults
    make_record(tmp_path, "a", study="first", top1=0.9)
    make_record(tmp_path, "b", study="first", seed=1, top1=0.8, sign="ste")
    make_record(tmp_path, "c", study="second", top1=0.7, epochs=2)
    r = run_cli(tables, ["table1", "--root", tmp_path, "--format", "csv", "--to-wandb", "--project", "papers"], env=env)
    assert r.returncode == 0, r.stderr
    printed = pd.read_csv(io.StringIO(r.stdout))  # stdout stays one parseable CSV
    pairs = expected("table1", tmp_path)
    assert {g for g, _ in pairs} == {"first", "second"}
    logged = wandb_runs(tmp_path)
    check_logged(logged, printed, pairs)
    assert {run.project for run, _, _ in logged.values()} == {"papers"}
    assert f"upload with: onebit-sync --root {tmp_path}" in r.stderr
    assert "logged offline to " + str(tmp_path / "tables_wandb") in r.stderr
    first = logged["first"][2]["bireal_table1-first"]
    cols = first["columns"]
    cell = [row[cols.index("Bi-Real-18")] for row in first["data"] if row[cols.index("activation")] == "approx"]
    assert cell == ["90.0 (n=1)"]

    shutil.rmtree(tmp_path / "tables_wandb")
    r = run_cli(tables, ["--root", tmp_path, "--all-studies", "--format", "csv", "--to-wandb"], env=env)
    assert r.returncode == 0, r.stderr
    pairs = expected("all", tmp_path, all_studies=True)
    assert {g for g, _ in pairs} == {T.ALL_STUDIES, T.NO_STUDY}
    logged = wandb_runs(tmp_path)
    check_logged(logged, pd.read_csv(io.StringIO(r.stdout)), pairs)
    assert {run.project for run, _, _ in logged.values()} == {"onebit"}


def test_to_wandb_conclusions_table_has_the_interval_p_and_verdict(tmp_path):
    """The W&B conclusions Table holds what the printed one does: the 95 % interval, P(better > worse), the
    Holm-adjusted p and the verdict (read back from the offline run files)."""
    env = {k: None for k in os.environ if k.startswith("WANDB_")}
    for seed, (a, s) in enumerate([(0.90, 0.80), (0.92, 0.86), (0.88, 0.85)]):
        make_record(tmp_path, f"a{seed}", sign="approx", seed=seed, top1=a)
        make_record(tmp_path, f"s{seed}", sign="ste", seed=seed, top1=s)
    r = run_cli(tables, ["table1", "--root", tmp_path, "--format", "csv", "--to-wandb"], env=env)
    assert r.returncode == 0, r.stderr
    logged = wandb_runs(tmp_path)["bireal_table1"][2]["bireal_table1_conclusions"]
    rows = [dict(zip(logged["columns"], row)) for row in logged["data"]]
    row = next(x for x in rows if x["conclusion"] == "ApproxSign > STE")
    ci = scipy.stats.ttest_1samp([10.0, 6.0, 3.0], 0).confidence_interval(0.95)
    assert row["95% CI"] == f"[{ci.low:.2f}, {ci.high:.2f}]" and row["P(better > worse)"] == 1.0
    assert row["p (Holm)"] == f"{scipy.stats.ttest_1samp([10.0, 6.0, 3.0], 0).pvalue:.2g}"
    assert row["verdict"] == "inconclusive" and row["pairs"] == 3
    assert {x["verdict"] for x in rows} <= {"supported", "contradicted", "inconclusive"}
