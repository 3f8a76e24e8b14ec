"""Bi-Real Table 1 through onebit.results: exact cell values, failed / missing cells, the shared twin counted
once, the paired conclusions, the formats and files, W&B errors, and a tiny real multirun end to end."""

from __future__ import annotations

import io
import math
import sys

import pandas as pd
import pytest
import scipy.stats
from conftest import FAST, ROOT, run_cli, run_process, run_train
from test_results import make_record

from onebit.cli.tables import main as tables
from onebit.results import bireal, cells
from onebit.results.load import load_records
from onebit.results.select import select


def test_cells_exact_values_failed_and_missing(tmp_path):
    make_record(tmp_path, "a", seed=0, top1=0.90, real_top1=0.95)
    make_record(tmp_path, "b", seed=1, top1=0.80, real_top1=0.97)
    make_record(tmp_path, "c", seed=2, status="failed", real_top1=None)
    make_record(tmp_path, "d", structure="plain", seed=0, top1=0.50, real_top1=0.90)
    make_record(tmp_path, "e", sign="ste", seed=0, top1=0.70, twin="clip-bireal-18-0-1")  # shares a's twin
    records, problems = load_records(tmp_path)
    assert problems == []
    found = bireal.cells(records)
    c = found[("clip", "proposed", "proposed", "bireal", 18)]
    assert (c.n, c.failed) == (2, 1)
    assert c.mean == pytest.approx(85.0) and c.std == pytest.approx(math.sqrt(50.0))
    real = found[("clip", "real", "real", "bireal", 18)]
    assert (real.n, real.failed, real.mean) == (2, 1, pytest.approx(96.0))  # the shared twin is counted once
    t = bireal.table(records).set_index(["init", "weight", "activation"])
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18"] == "85.0 ± 7.1 (n=2), 1 failed"
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18 paper"] == 56.4
    assert t.loc[("clip", "magnitude_aware", "approx"), "Plain-18"] == "50.0 (n=1)"
    assert ("clip", "plain", "ste") not in t.index  # a row with no run at all is not printed
    assert t.loc[("clip", "magnitude_aware", "ste"), "Plain-18"] == "missing"
    make_record(tmp_path, "r", seed=3, status="running", real_top1=0.99)
    records, _ = load_records(tmp_path)
    assert cells.summarize([r for r in records if r.run_id in ("id-r", "id-a")], "test/top1").text() == \
        "90.0 (n=1), 1 running"


def test_conclusions_paired_differences(tmp_path):
    for seed, (a, s) in enumerate([(0.90, 0.80), (0.92, 0.86), (0.88, 0.85)]):
        make_record(tmp_path, f"a{seed}", sign="approx", seed=seed, top1=a)
        make_record(tmp_path, f"s{seed}", sign="ste", seed=seed, top1=s)
    make_record(tmp_path, "unpaired", sign="ste", seed=7, top1=0.1)  # no ApproxSign partner: not used
    make_record(tmp_path, "other_lr", sign="approx", seed=7, top1=0.9, optimizer__lr=0.1)  # differs in lr too
    records, _ = load_records(tmp_path)
    row = bireal.conclusions(records).set_index("conclusion").loc["ApproxSign > STE"]
    diffs = [10.0, 6.0, 3.0]
    ci = scipy.stats.ttest_1samp(diffs, 0).confidence_interval(0.95)
    assert row["pairs"] == 3 and row["ours (points)"] == pytest.approx(round(sum(diffs) / 3, 2))
    assert row["95% CI"] == f"[{ci.low:.2f}, {ci.high:.2f}]" and row["bootstrap 95% CI"] == "–"  # bootstrap: n >= 5
    # the only conclusion with pairs: its Holm p is its own t-test's; the interval contains 0: inconclusive
    assert row["p (Holm)"] == f"{scipy.stats.ttest_1samp(diffs, 0).pvalue:.2g}"
    assert row["verdict"] == "inconclusive" and row["P(better > worse)"] == 1.0
    assert row["paper (points)"] == pytest.approx(56.4 - 53.6)


def test_corrupt_record_reported_and_rest_loads(tmp_path):
    make_record(tmp_path, "good", top1=0.9)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text('{"schema": 1, "status": "fin')
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"onebit: skipped {tmp_path / 'bad' / 'record.json'}: corrupt or truncated record")
    assert "90.0 (n=1)" in r.stdout


def test_formats_and_out_dir(tmp_path):
    make_record(tmp_path / "runs", "a", top1=0.9)
    make_record(tmp_path / "runs", "b", seed=1, top1=0.1, trainer={"limit_train_batches": 2})
    out = tmp_path / "tables"
    for fmt, suffix in (("markdown", "md"), ("csv", "csv"), ("latex", "tex"), ("text", "txt")):
        r = run_cli(tables, ["table1", "--root", tmp_path / "runs", "--format", fmt, "--out", out])
        assert r.returncode == 0, r.stderr
        assert (out / f"bireal_table1.{suffix}").exists() and (out / f"bireal_table1_conclusions.{suffix}").exists()
    df = pd.read_csv(out / "bireal_table1.csv")
    assert df.loc[0, "Bi-Real-18"] == "90.0 (n=1)" and df.loc[0, "Bi-Real-18 paper"] == 56.4
    assert "left out: 1 smoke run (trainer.limit_train_batches=2)" in (out / "bireal_table1.md").read_text()
    assert (out / "bireal_table1.tex").read_text().startswith("% Bi-Real Table 1, study bireal_table1")


def test_wandb_unreachable_project_one_line():
    """The one real process of ``python analysis/tables.py`` (the other tests call onebit.cli.tables.main): after a
    failed W&B read the process prints one line and leaves, without waiting on wandb's busy service."""
    r = run_process([sys.executable, str(ROOT / "analysis" / "tables.py"), "--source", "wandb", "--entity",
                     "nobody-xyz", "--project", "missing-project"],
                    env={"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}, timeout=600)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("onebit: error: W&B project 'nobody-xyz/missing-project' could not be read")


def test_tiny_real_multirun_to_table(tmp_path):
    r = run_train(["-m", "sweeps=bireal_table1", "pretrain=clip", "weight=magnitude_aware", "model=bireal18,plain18",
                   "seed=0,1", *FAST, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = run_cli(tables, ["table1", "--root", tmp_path, "--format", "csv"])
    assert out.returncode == 1 and "left out: 8 smoke runs (trainer.limit_test_batches=2, " in out.stderr
    out = run_cli(tables, ["table1", "--root", tmp_path, "--format", "csv", "--include-smoke"])
    assert out.returncode == 0, out.stderr
    records, _ = load_records(tmp_path)
    (sel,) = select(records, include_smoke=True)
    found = bireal.cells(sel.records)
    for rec in sel.records:
        cell = found[bireal.position(rec)]
        same = [r.final_stage.metrics["test/top1"] * 100 for r in sel.records if bireal.position(r) == bireal.position(rec)]
        assert cell.n == 2 and cell.mean == pytest.approx(sum(same) / 2)
    table = pd.read_csv(io.StringIO(out.stdout.split("\n\n")[0]))
    assert {"Bi-Real-18", "Plain-18", "Bi-Real-18 paper"} <= set(table.columns)
    assert table.set_index(["weight", "activation"]).loc[("real", "real"), "Bi-Real-18"].endswith("(n=2)")
