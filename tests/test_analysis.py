"""Tables from crafted records (exact cell values, failed / missing cells, mixed seeds), from W&B-shaped runs
(flat and nested config keys), and from a tiny real multirun end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import FAST, ROOT, run_train
from onebit import analysis as A
from onebit.records import atomic_write_json

TABLES = [sys.executable, str(ROOT / "analysis" / "tables.py")]


def record(root: Path, name: str, *, pretrain="clip", weight="magnitude_aware", sign="approx", structure="bireal",
           depth=18, seed=0, top1=0.9, real_top1=0.95, status="finished", study="bireal_table1", twin=None,
           started=0.0):
    rec = {
        "schema": 1, "job_key": f"{pretrain}-{weight}-{sign}-{structure}-{depth}-{seed}-{name}", "study": study,
        "status": status, "error": "boom" if status == "failed" else None,
        "options": {"study": study, "data": "digits", "model": f"{structure}{depth}", "sign": sign, "weight": weight,
                    "pretrain": pretrain, "shortcut": structure != "plain", "structure": structure, "depth": depth,
                    "seed": seed, "epochs": 1, "bn_retrain": False, "experiment": None},
        "config": {"model": {"depth": depth}}, "timings": {"started": started},
        "run_dir": str(root / name), "stages": {},
    }
    if status != "failed" or real_top1 is not None:
        rec["stages"]["pretrain"] = {"status": "finished", "metrics": {"test/top1": real_top1},
                                     "cache": {"key": twin or f"{pretrain}-{structure}-{depth}-{seed}"}}
    if status == "finished":
        rec["stages"]["binary"] = {"status": "finished", "metrics": {"test/top1": top1, "val/top1_best": top1}}
    atomic_write_json(root / name / "record.json", rec)
    return rec


def test_cells_exact_values_failed_and_missing(tmp_path):
    record(tmp_path, "a", seed=0, top1=0.90, real_top1=0.95)
    record(tmp_path, "b", seed=1, top1=0.80, real_top1=0.97)
    record(tmp_path, "c", seed=2, status="failed", real_top1=None)
    record(tmp_path, "d", structure="plain", seed=0, top1=0.50, real_top1=0.90)
    record(tmp_path, "e", sign="ste", seed=0, top1=0.70, twin="clip-bireal-18-0")  # shares seed 0's twin
    df, problems = A.load_runs(tmp_path)
    assert problems == []
    cells = A.table1_cells(df)
    c = cells[("clip", "proposed", "proposed", "bireal", 18)]
    assert (c["n"], c["failed"]) == (2, 1)
    assert c["mean"] == pytest.approx(85.0) and c["std"] == pytest.approx(math.sqrt(50.0))
    real = cells[("clip", "real", "real", "bireal", 18)]
    assert real["n"] == 2 and real["mean"] == pytest.approx(96.0)  # the shared twin is counted once
    t = A.table1(df).set_index(["init", "weight", "activation"])
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18"] == "85.0 ± 7.1 (n=2), 1 failed"
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18 paper"] == 56.4
    assert t.loc[("clip", "magnitude_aware", "approx"), "Plain-18"] == "50.0 (n=1)"
    assert ("clip", "plain", "ste") not in t.index  # a row with no run at all is not printed
    assert t.loc[("clip", "magnitude_aware", "ste"), "Plain-18"] == "missing"


def test_conclusions_paired_differences(tmp_path):
    for seed, (a, s) in enumerate([(0.90, 0.80), (0.92, 0.86), (0.88, 0.85)]):
        record(tmp_path, f"a{seed}", sign="approx", seed=seed, top1=a)
        record(tmp_path, f"s{seed}", sign="ste", seed=seed, top1=s)
    record(tmp_path, "unpaired", sign="ste", seed=7, top1=0.1)  # no ApproxSign partner: not used
    df, _ = A.load_runs(tmp_path)
    row = A.conclusions(df).set_index("conclusion").loc["ApproxSign > STE"]
    diffs = [10.0, 6.0, 3.0]
    se = pd.Series(diffs).std() / math.sqrt(3)
    assert row["pairs"] == 3 and row["ours (points)"] == pytest.approx(round(sum(diffs) / 3, 2))
    assert row["SE"] == pytest.approx(round(se, 2)) and row["verdict"] == "holds, exceeds seed noise"
    assert row["paper (points)"] == pytest.approx(56.4 - 53.6)


def test_rerun_of_same_job_keeps_latest_finished(tmp_path):
    record(tmp_path, "old", seed=0, top1=0.5, started=1.0)
    rec = record(tmp_path, "new", seed=0, top1=0.7, started=2.0)
    for name in ("old", "new"):  # same job run twice
        p = tmp_path / name / "record.json"
        data = json.loads(p.read_text())
        data["job_key"] = rec["job_key"]
        p.write_text(json.dumps(data))
    df, _ = A.load_runs(tmp_path)
    c = A.table1_cells(df)[("clip", "proposed", "proposed", "bireal", 18)]
    assert c["n"] == 1 and c["mean"] == pytest.approx(70.0)


def test_corrupt_record_reported_and_rest_loads(tmp_path):
    record(tmp_path, "good", top1=0.9)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text('{"schema": 1, "status": "fin')
    r = subprocess.run([*TABLES, "table1", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{tmp_path / 'bad' / 'record.json'}: corrupt or truncated record" in r.stderr
    assert "90.0 (n=1)" in r.stdout


def test_query_without_runs_is_one_line_error(tmp_path):
    r = subprocess.run([*TABLES, "table1", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f"onebit: error: no run records under {tmp_path}"
    record(tmp_path, "x", study="other")
    r = subprocess.run([*TABLES, "study", "--study", "nope", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "onebit: error: no runs of study 'nope'"


def test_formats_and_out_dir(tmp_path):
    record(tmp_path / "runs", "a", top1=0.9)
    out = tmp_path / "tables"
    for fmt, suffix in (("markdown", "md"), ("csv", "csv"), ("latex", "tex")):
        r = subprocess.run([*TABLES, "table1", "--root", str(tmp_path / "runs"), "--format", fmt, "--out", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert (out / f"bireal_table1.{suffix}").exists()
    df = pd.read_csv(out / "bireal_table1.csv")
    assert df.loc[0, "Bi-Real-18"] == "90.0 (n=1)" and df.loc[0, "Bi-Real-18 paper"] == 56.4


def test_wandb_rows_flat_and_nested_config():
    flat = SimpleNamespace(id="r1", group="bireal_table1", job_type="binary", state="finished",
                           config={"sign": "approx", "weight": "plain", "pretrain": "relu", "structure": "res",
                                   "depth": 18, "seed": 1, "study": "bireal_table1", "job_key": "k1"},
                           summary={"test/top1": 0.5, "val/top1_best": 0.6, "val/top1": 0.4})
    nested = SimpleNamespace(id="r2", group="bireal_table1", job_type="binary", state="crashed",
                             config={"config": {"sign": {"_target_": "onebit.quantizers.SteSign", "t": 1.0},
                                                "weight": {"_target_": "onebit.quantizers.MagnitudeAware"},
                                                "pretrain": {"name": "clip"}, "seed": 2,
                                                "model": {"depth": 34, "structure": "bireal", "shortcut": False}}},
                             summary={})
    df = A.rows_from_wandb([flat, nested])
    r1, r2 = df.iloc[0], df.iloc[1]
    assert (r1.sign, r1.weight, r1.pretrain, r1.structure, r1.depth, r1["val/top1_best"]) == (
        "approx", "plain", "relu", "res", 18, 0.6)
    assert (r2.sign, r2.weight, r2.pretrain, r2.structure, r2.depth, r2.run_status, r2.study) == (
        "ste", "magnitude_aware", "clip", "plain", 34, "failed", "bireal_table1")
    c = A.table1_cells(df)
    assert c[("relu", "original", "proposed", "res", 18)]["mean"] == pytest.approx(50.0)
    assert c[("clip", "proposed", "original", "plain", 34)]["failed"] == 1


def test_wandb_unreachable_project_one_line():
    r = subprocess.run([*TABLES, "--source", "wandb", "--entity", "nobody-xyz", "--project", "missing-project"],
                       capture_output=True, text=True, env={**__import__("os").environ, "WANDB_API_KEY": "x" * 40,
                                                            "WANDB_BASE_URL": "http://127.0.0.1:9"}, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("onebit: error: W&B project 'nobody-xyz/missing-project' could not be read")


def test_tiny_real_multirun_to_table(tmp_path):
    r = run_train(["-m", "sweeps=bireal_table1", "pretrain=clip", "weight=magnitude_aware", "model=bireal18,plain18",
                   "seed=0,1", *FAST, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = subprocess.run([*TABLES, "table1", "--root", str(tmp_path), "--format", "csv"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    df, _ = A.load_runs(tmp_path)
    fin = A.final_rows(df)
    for (sign, structure), g in fin.groupby(["sign", "structure"]):
        cell = A.table1_cells(df)[("clip", "proposed", A.SIGN_TO_PAPER[sign], structure, 18)]
        assert cell["n"] == 2 and cell["mean"] == pytest.approx(g["test/top1"].mean() * 100)
    table = pd.read_csv(__import__("io").StringIO(out.stdout.split("\n\n")[0]))
    assert {"Bi-Real-18", "Plain-18", "Bi-Real-18 paper"} <= set(table.columns)
