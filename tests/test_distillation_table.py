"""The distillation table (``onebit.results.distillation``, ``sweeps=distillation``): a real one-factor sweep on
digits (5 cells x 2 seeds), its cells placed by the one change they make, and each conclusion the mean of its
paired differences, recomputed here from the records."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from conftest import TINY_FULL, run_cli, run_train

from onebit.cli.tables import main as tables
from onebit.records.record import read_record
from onebit.results.distillation import ROWS, position

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("distillation")
    r = run_train(["-m", "sweeps=distillation", *TINY_FULL, "pretrain.epochs=1", "seed=0,1", f"output_root={root}"])
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def csv_frame(root) -> pd.DataFrame:
    out = run_cli(tables, ["distillation", "--study", "distillation", "--root", str(root), "--format", "csv"])
    assert out.returncode == 0, out.stderr
    assert "could not be verified against the papers' text" in out.stderr + out.stdout
    return pd.read_csv(io.StringIO(out.stdout), dtype=str, keep_default_na=False)


def test_the_sweep_runs_the_design_and_the_table_places_every_cell(root):
    records = [read_record(p) for p in root.rglob("record.json")]
    assert len(records) == 10 and all(r.status == "finished" for r in records)
    assert sorted(position(r) for r in records) == sorted(ROWS * 2)
    base = [r for r in records if position(r) == "base"][0]
    assert (base.options["recipe"], base.options["distill"], base.options["optimizer"]) == ("two_step", "twin", "adam")
    assert base.config["sign"]["learnable_threshold"] is True
    assert list(base.stages) == ["pretrain", "binary_activations", "binary"]
    cells = csv_frame(root).query("cell != ''").set_index("cell")["ours"]
    assert list(cells.index) == list(ROWS) and all(v.endswith("(n=2)") for v in cells), cells


def test_each_conclusion_is_the_mean_of_its_paired_differences(root):
    records = [read_record(p) for p in root.rglob("record.json")]
    top1 = {(position(r), r.options["seed"]): 100 * r.final_stage.metrics["test/top1"] for r in records}
    expected = {"distillation > none": ("base", "distill=none"),
                "learnable threshold > fixed": ("base", "learnable_threshold=false"),
                "two-step > one-step": ("base", "recipe=one_step"),
                "Bop > latent weights": ("optimizer=bop", "base")}
    rows = csv_frame(root).query("conclusion != ''").set_index("conclusion")
    assert list(rows.index) == list(expected), rows
    for name, (better, worse) in expected.items():
        diffs = [top1[(better, s)] - top1[(worse, s)] for s in (0, 1)]
        assert float(rows.loc[name, "ours (points)"]) == pytest.approx(sum(diffs) / 2, abs=0.006), name
        assert rows.loc[name, "pairs"] == "2" and rows.loc[name, "paper (points)"] == ""
        assert rows.loc[name, "verdict"] in ("supported", "contradicted", "inconclusive")
