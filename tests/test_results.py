"""onebit.results: one validating loader, one cell definition (onebit.identity.cell_key), tables that never mix
cells, studies or smoke runs, duplicates of one seed dropped, the final stage's metric only, W&B runs through the
same validation, and the committed schema-1 example reproduced. Records are written as schema-2 RunRecords by
:func:`make_record` (importable by the other analysis tests)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import run_cli

from onebit.cli.tables import main as tables
from onebit.records.identity import cell_key, smoke_reasons
from onebit.records.record import SCHEMA, RunRecord, StageRecord
from onebit.results import bireal, cells, study
from onebit.results.load import NoRunsError, load_records, records_from_wandb
from onebit.results.select import select
from onebit.tracking.wandb_record import wandb_config

ROOT = Path(__file__).resolve().parents[1]
SIGNS = {"approx": {"_target_": "onebit.nn.quantizers.ApproxSign", "t": None},
         "ste": {"_target_": "onebit.nn.quantizers.SteSign", "t": 1.0},
         "swish": {"_target_": "onebit.nn.quantizers.SwishSign", "beta": 5.0}}
WEIGHTS = {"plain": {"_target_": "onebit.nn.quantizers.PlainSign", "t": 1.0},
           "magnitude_aware": {"_target_": "onebit.nn.quantizers.MagnitudeAware"},
           "xnor": {"_target_": "onebit.nn.quantizers.XnorScaling", "t": 1.0}}
ACTIVATIONS = {"clip": {"_target_": "onebit.nn.quantizers.Clip"}, "relu": {"_target_": "onebit.nn.quantizers.ReLU"},
               "none": None}


def make_config(*, sign="approx", weight="magnitude_aware", pretrain="clip", structure="bireal", depth=18, seed=0,
                study="bireal_table1", epochs=1, data="digits", downsample="full_precision", bn_retrain=False,
                trainer=None, width=None, **dotted) -> dict:
    """A resolved onebit config (the keys the cell identity sees); ``dotted`` overrides (``optimizer__lr``)."""
    config = {
        "data": {"_target_": "onebit.data.DigitsData", "batch_size": 64, "seed": seed, "num_workers": 0}
        if data == "digits" else {"_target_": "onebit.data.CifarData", "variant": data, "seed": seed},
        "model": {"_target_": "onebit.nn.models.BiRealResNet", "depth": depth,
                  "structure": "bireal" if structure == "plain" else structure, "shortcut": structure != "plain",
                  "width": width, "stem": "small", "downsample": downsample, "nonlinearity": "none",
                  "init": "kaiming" if pretrain != "none" else "glorot"},
        "sign": SIGNS[sign], "weight": WEIGHTS[weight],
        "pretrain": {"name": pretrain, "activation": ACTIVATIONS[pretrain], "epochs": 0 if pretrain == "none"
                     else epochs},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.002},
        "trainer": {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", **(trainer or {})},
        "logger": {"name": "none"}, "study": study, "seed": seed, "shortcut": structure != "plain", "epochs": epochs,
        "bn_retrain": bn_retrain, "output_root": "/somewhere", "cache_dir": "/somewhere/cache"}
    for key, value in dotted.items():
        *parents, last = key.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return config


def make_record(root: Path, name: str, *, sign="approx", weight="magnitude_aware", pretrain="clip",
                structure="bireal", depth=18, seed=0, study="bireal_table1", status="finished", top1=0.9, top5=0.99,
                real_top1=0.95, twin=None, started=0.0, epochs=1, data="digits", downsample="full_precision",
                bn_retrain=False, trainer=None, history=None, metrics=None, job_key=None, **dotted) -> RunRecord:
    """A schema-2 record saved at ``root/name/record.json``: a ``pretrain`` stage (unless ``pretrain="none"``;
    its test/top1 is ``real_top1``, its cache key ``twin``), ``binary``, and ``bn_retrain`` when asked."""
    config = make_config(sign=sign, weight=weight, pretrain=pretrain, structure=structure, depth=depth, seed=seed,
                         study=study, epochs=epochs, data=data, downsample=downsample, bn_retrain=bn_retrain,
                         trainer=trainer, **dotted)
    options = {"study": study, "data": data, "model": f"{'bireal' if structure == 'plain' else structure}{depth}"
               if structure != "plain" else f"plain{depth}", "sign": sign, "weight": weight, "pretrain": pretrain,
               "shortcut": structure != "plain", "structure": structure, "depth": depth, "seed": seed,
               "epochs": epochs, "bn_retrain": bn_retrain, "experiment": None}
    stages = {}
    if pretrain != "none":
        pre = "finished" if real_top1 is not None else ("failed" if status == "failed" else "pending")
        stages["pretrain"] = StageRecord("pretrain", "twin", "cache", epochs, pre,
                                         {"test/top1": real_top1} if real_top1 is not None else {},
                                         cache={"key": twin or f"{pretrain}-{structure}-{depth}-{seed}-{epochs}",
                                                "hit": twin is not None})
    final = {"test/top1": top1, "test/top5": top5, "val/top1_best": top1} if metrics is None else metrics
    stages["binary"] = StageRecord("binary", "binary", "pretrain" if pretrain != "none" else None, epochs,
                                   {"finished": "finished", "failed": "failed"}.get(status, "running"),
                                   final if status == "finished" and not bn_retrain else
                                   ({"test/top1": top1} if status == "finished" else {}), history=history or [])
    if bn_retrain:
        stages["bn_retrain"] = StageRecord("bn_retrain", "binary", "binary", 1,
                                           "finished" if status == "finished" else "pending",
                                           final if status == "finished" else {})
    rec = RunRecord(job_key=job_key or f"key-{name}", run_id=f"id-{name}", study=study, run_dir=str(root / name),
                    options=options, config=config, smoke=smoke_reasons(config), status=status,
                    error="boom" if status == "failed" else None, stages=stages, timings={"started": started})
    rec.save()
    return rec


# ----------------------------------------------------------------------------------------------------------
# 1. One validating loader
# ----------------------------------------------------------------------------------------------------------


def test_bad_records_are_named_and_never_averaged(tmp_path, capsys):
    make_record(tmp_path, "good", top1=0.9)
    bad = {"truncated": '{"schema": 2, "status": "fin'}
    for name, change in (("string_metric", ("binary", "test/top1", "0.1")), ("int_attempts", None)):
        rec = make_record(tmp_path, name, seed=7, top1=0.1).to_dict()
        if change:
            rec["stages"][change[0]]["metrics"][change[1]] = change[2]
        else:
            rec["attempts"] = "1"
        bad[name] = json.dumps(rec)
    started = make_record(tmp_path, "started_text", seed=8, top1=0.1).to_dict()
    started["timings"]["started"] = "yesterday"
    bad["started_text"] = json.dumps(started)
    for name, text in bad.items():
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "record.json").write_text(text)
    records, problems = load_records(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert [r.run_id for r in records] == ["id-good"] and len(problems) == 4 and len(err) == 4
    for name in bad:
        path = tmp_path / name / "record.json"
        assert sum(line.startswith(f"onebit: skipped {path}: ") for line in err) == 1, (name, err)
    assert any("stages.binary: field 'metrics'" in line for line in err)
    assert any("field 'attempts'" in line for line in err) and any("field 'timings'" in line and 'yesterday' in line for line in err)
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 0 and "90.0 (n=1)" in r.stdout and r.stderr.count("onebit: skipped") == 4


# ----------------------------------------------------------------------------------------------------------
# 2-3. One definition of a cell; positions that would mix cells are split
# ----------------------------------------------------------------------------------------------------------


def test_runs_differing_only_in_epochs_are_two_cells_and_two_tables(tmp_path):
    make_record(tmp_path, "e1", epochs=1, top1=0.80, real_top1=0.90)
    make_record(tmp_path, "e2", epochs=2, seed=1, top1=0.90, real_top1=0.96)
    records, _ = load_records(tmp_path)
    assert len(cells.group_cells(records)) == 2
    assert cell_key(records[0].config) != cell_key(records[1].config)
    (sel,) = select(records)
    out = bireal.tables(sel)
    assert [t.name for t in out] == ["bireal_table1-epochs=1-pretrain.epochs=1",
                                     "bireal_table1-epochs=1-pretrain.epochs=1_conclusions",
                                     "bireal_table1-epochs=2-pretrain.epochs=2",
                                     "bireal_table1-epochs=2-pretrain.epochs=2_conclusions"]
    t1, t2 = out[0].frame.set_index(["init", "weight"]), out[2].frame.set_index(["init", "weight"])
    assert t1.loc[("clip", "magnitude_aware"), "Bi-Real-18"] == "80.0 (n=1)"
    assert t2.loc[("clip", "magnitude_aware"), "Bi-Real-18"] == "90.0 (n=1)"
    assert t2.loc[("clip", "real"), "Bi-Real-18"] == "96.0 (n=1)"
    assert "[epochs=2, pretrain.epochs=2]" in out[2].title
    assert any("differ in epochs, pretrain.epochs" in n for n in out[0].notes)
    assert study.table(sel.records)["epochs"].tolist() == [1, 2]


def test_a_config_key_outside_the_table_axes_splits_too(tmp_path):
    for seed in (0, 1):
        make_record(tmp_path, f"a{seed}", seed=seed, top1=0.8, optimizer__lr=0.002)
        make_record(tmp_path, f"b{seed}", seed=seed, top1=0.6, optimizer__lr=0.01, twin=f"lr-{seed}")
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 0, r.stderr
    assert "[optimizer.lr=0.002]" in r.stdout and "[optimizer.lr=0.01]" in r.stdout
    assert "80.0 ± 0.0 (n=2)" in r.stdout and "60.0 ± 0.0 (n=2)" in r.stdout and "70.0" not in r.stdout


# ----------------------------------------------------------------------------------------------------------
# 4. Duplicates of one seed; 5. the final stage's metric only
# ----------------------------------------------------------------------------------------------------------


def test_duplicate_seed_keeps_the_latest_finished_run(tmp_path):
    make_record(tmp_path, "old", top1=0.5, started=1.0)
    make_record(tmp_path, "new", top1=0.7, started=2.0)
    make_record(tmp_path, "newest_failed", status="failed", real_top1=None, started=3.0)
    make_record(tmp_path, "other_seed", seed=1, top1=0.9, started=0.5)
    records, _ = load_records(tmp_path)
    kept, dropped = cells.dedupe(records)
    assert dropped == 2 and sorted(r.run_id for r in kept) == ["id-new", "id-other_seed"]
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert "80.0 ± 14.1 (n=2)" in r.stdout and "failed" not in r.stdout.split("conclusions")[0]
    assert "dropped 2 older duplicate(s) of the same cell and seed" in r.stdout


def test_missing_final_stage_metric_is_missing_not_filled(tmp_path):
    make_record(tmp_path, "a", bn_retrain=True, top1=0.8)
    make_record(tmp_path, "b", bn_retrain=True, seed=1, top1=0.9, metrics={"val/top1": 0.5})  # no test/top1
    records, _ = load_records(tmp_path)
    assert [r.final_stage.name for r in records] == ["bn_retrain", "bn_retrain"]
    assert records[1].stages["binary"].metrics["test/top1"] == 0.9  # there, but not the final stage
    c = cells.summarize(records, "test/top1")
    assert (c.n, c.missing, c.mean) == (1, 1, pytest.approx(80.0))
    assert c.text() == "80.0 (n=1), 1 missing test/top1"


# ----------------------------------------------------------------------------------------------------------
# 6. Smoke runs; 7. studies
# ----------------------------------------------------------------------------------------------------------


def test_smoke_runs_are_left_out_and_named(tmp_path):
    make_record(tmp_path, "full", top1=0.9)
    make_record(tmp_path, "smoke", seed=1, top1=0.1, trainer={"limit_train_batches": 3})
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 0, r.stderr
    assert "90.0 (n=1)" in r.stdout and "50.0" not in r.stdout
    assert "left out: 1 smoke run (trainer.limit_train_batches=3)" in r.stdout
    r = run_cli(tables, ["table1", "--root", tmp_path, "--include-smoke"])
    titles = [line for line in r.stdout.splitlines() if line.startswith("== Bi-Real Table 1,")]
    assert all("smoke runs included" in t for t in titles) and "includes 1 smoke run" in r.stdout
    # a smoke run is its own cell (the Trainer limit is in the identity): its own table, never averaged in
    assert "[trainer.limit_train_batches=3]" in titles[1] and "10.0 (n=1)" in r.stdout and "90.0 (n=1)" in r.stdout
    only = tmp_path / "only"
    make_record(only, "s", trainer={"limit_train_batches": 2})
    make_record(only, "t", seed=1, trainer={"fast_dev_run": True})
    r = run_cli(tables, ["table1", "--root", only])
    assert r.returncode == 1 and r.stderr.strip() == (
        "onebit: error: no runs to show: study bireal_table1: left out: 2 smoke runs (trainer.fast_dev_run=True, "
        "trainer.limit_train_batches=2); --include-smoke shows them")


def test_one_table_per_study_unless_all_studies(tmp_path):
    make_record(tmp_path, "a", study="first", top1=0.9)
    make_record(tmp_path, "b", study="second", top1=0.7, epochs=2)
    r = run_cli(tables, ["table1", "--root", tmp_path])
    titles = [line for line in r.stdout.splitlines() if line.startswith("== Bi-Real Table 1,")]
    assert titles[0].startswith("== Bi-Real Table 1, study first (") and "study second (" in titles[1]
    assert "90.0 (n=1)" in r.stdout and "70.0 (n=1)" in r.stdout and "80.0" not in r.stdout
    r = run_cli(tables, ["table1", "--root", tmp_path, "--all-studies"])
    assert "all studies mixed (first, second) [epochs=1, pretrain.epochs=1]" in r.stdout
    make_record(tmp_path, "c", study="second", seed=1, top1=0.5)  # a's cell in another study: mixed on request
    r = run_cli(tables, ["study", "--root", tmp_path, "--all-studies", "--format", "csv"])
    assert r.returncode == 0 and "All studies mixed (first, second)" in r.stderr
    assert "70.0 ± 28.3 (n=2)" in r.stdout and "70.0 (n=1)" in r.stdout  # a (0.9) + c (0.5); b
    r = run_cli(tables, ["study", "--root", tmp_path, "--study", "nope"])
    assert r.returncode == 1 and r.stderr.strip() == "onebit: error: no runs of study 'nope' (studies: first, second)"


# ----------------------------------------------------------------------------------------------------------
# 8. W&B: one run per stage, regrouped and validated
# ----------------------------------------------------------------------------------------------------------


def wandb_runs(rec: RunRecord, state="finished", drop=()):
    def config(name):
        return {k: v for k, v in wandb_config(rec, name).items() if k not in drop}
    return [SimpleNamespace(id=f"{rec.run_id}-{name}", group=rec.study, job_type=name, state=state,
                            config={**config(name), "stage": name}, summary={**st.metrics, "_runtime": 3.0, "epoch": 1})
            for name, st in rec.stages.items()]


def test_wandb_runs_are_regrouped_and_validated(tmp_path, capsys):
    a = make_record(tmp_path, "a", top1=0.8, real_top1=0.9)
    b = make_record(tmp_path, "b", seed=1, top1=0.6, real_top1=0.94)
    bad = make_record(tmp_path, "bad", seed=2, top1=0.1)
    nameless = make_record(tmp_path, "nameless", seed=3, top1=0.1)
    runs = wandb_runs(a) + wandb_runs(b, state="crashed")[:1] + wandb_runs(b)[1:] + wandb_runs(nameless, drop=("run_id",))
    broken = wandb_runs(bad)
    broken[1].summary["test/top1"] = "0.1"
    records, problems = records_from_wandb(list(reversed(runs)) + broken)
    err = capsys.readouterr().err
    assert sorted(r.run_id for r in records) == ["id-a", "id-b"] and len(problems) == 3
    assert "onebit: skipped wandb run id-nameless-pretrain: missing field 'run_id'" in err
    assert "onebit: skipped wandb run(s) id-bad-binary, id-bad-pretrain: stages.binary: field 'metrics'" in err
    by_id = {r.run_id: r for r in records}
    assert list(by_id["id-a"].stages) == ["pretrain", "binary"] and by_id["id-a"].final_stage.name == "binary"
    assert by_id["id-a"].status == "finished" and by_id["id-b"].status == "failed"
    assert by_id["id-a"].config == a.config and by_id["id-a"].options == a.options
    found = bireal.cells(records)
    binary, real = found[("clip", "proposed", "proposed", "bireal", 18)], found[("clip", "real", "real", "bireal", 18)]
    assert (binary.n, binary.failed, binary.mean) == (1, 1, pytest.approx(80.0))
    assert (real.n, real.failed, real.mean) == (1, 1, pytest.approx(90.0))


# ----------------------------------------------------------------------------------------------------------
# 11. The committed schema-1 example
# ----------------------------------------------------------------------------------------------------------


def _markdown_frame(path: Path) -> pd.DataFrame:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return pd.DataFrame(rows[2:], columns=rows[0])


def test_schema1_example_loads_and_reproduces_the_committed_tables(tmp_path):
    example = ROOT / "tests" / "data" / "digits_schema1"  # the founding session's bireal_table1 sweep on digits
    records, problems = load_records(example)
    assert problems == [] and len(records) == 72 and {r.schema for r in records} == {SCHEMA}
    assert len(cells.group_cells(records)) == 24  # relu|clip x 4 weight/sign x 3 structures, 3 seeds each
    r = run_cli(tables, ["table1", "--root", example, "--format", "markdown", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    for name in ("bireal_table1", "bireal_table1_conclusions"):
        ours, committed = _markdown_frame(tmp_path / f"{name}.md"), _markdown_frame(example / f"{name}.md")
        pd.testing.assert_frame_equal(ours, committed)
    t = _markdown_frame(tmp_path / "bireal_table1.md").set_index(["init", "weight", "activation"])
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18"] == "97.9 ± 0.4 (n=3)"
    assert not math.isnan(float(t.loc[("clip", "real", "real"), "Plain-18 paper"]))


def test_no_runs_is_one_line_and_exit_1(tmp_path):
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 1 and r.stderr.strip() == f"onebit: error: no run records under {tmp_path}"
    with pytest.raises(NoRunsError, match="does not exist"):
        load_records(tmp_path / "nope")
    r = run_cli(tables, ["table1", "--root", tmp_path, "--metric", "test/top7"])
    assert r.returncode == 2 and "unknown --metric 'test/top7'; valid: test/top1" in r.stderr


# ----------------------------------------------------------------------------------------------------------
# 12. The committed Fashion-MNIST example (README)
# ----------------------------------------------------------------------------------------------------------


def test_fashion_mnist_example_reproduces_the_committed_tables(tmp_path):
    """analysis/example/: `sweeps=bireal_conclusions` on Fashion-MNIST, both protocols, 3 seeds: 30 finished full
    runs (no smoke run), 5 cells per protocol, and the committed tables are what tables.py makes of the records."""
    example = ROOT / "analysis" / "example"
    records, problems = load_records(example / "records")
    assert problems == [] and len(records) == 30
    assert all(r.status == "finished" and not r.smoke and r.options["data"] == "fashion_mnist" for r in records)
    assert {r.config["protocol"] for r in records} == {"paper_sgd", "official_adam"}
    assert len(cells.group_cells(records)) == 10
    r = run_cli(tables, ["table1", "--root", example / "records", "--format", "markdown", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in example.glob("bireal_table1*.md"))
    assert names == sorted(p.name for p in tmp_path.glob("*.md")) and len(names) == 4
    for name in names:
        pd.testing.assert_frame_equal(_markdown_frame(tmp_path / name), _markdown_frame(example / name))
        assert (tmp_path / name).read_text().splitlines()[0] == (example / name).read_text().splitlines()[0]
    sgd = _markdown_frame(example / "bireal_table1-bireal_conclusions-protocol=paper_sgd_conclusions.md")
    assert list(sgd["pairs"]) == ["3"] * 4


def test_adaptive_fashion_mnist_example_states_its_sequential_design(tmp_path):
    """analysis/example/adaptive/: the same Fashion-MNIST star under paper_sgd with ``hydra.sweeper.seeds=auto``
    (looks at 3, 4, 5, 6 seeds): every record carries the design outside its identity, the cells received different
    numbers of seeds (only the open comparisons were extended), and the committed tables are what tables.py makes of
    the records, with the sequential rule's verdicts and the design stated under the conclusions."""
    example = ROOT / "analysis" / "example" / "adaptive"
    records, problems = load_records(example / "records")
    assert problems == [] and all(r.status == "finished" and not r.smoke for r in records)
    designs = {json.dumps(r.config["sequential"], sort_keys=True) for r in records}
    assert len(designs) == 1 and json.loads(designs.pop())["looks"] == [3, 4, 5, 6]
    seeds = {}
    for rec in records:
        seeds.setdefault(cell_key(rec.config), set()).add(rec.config["seed"])
    assert len(seeds) == 5 and max(map(len, seeds.values())) > min(map(len, seeds.values())) >= 3
    r = run_cli(tables, ["table1", "--root", example / "records", "--format", "markdown", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in example.glob("bireal_table1*.md"))
    assert names == sorted(p.name for p in tmp_path.glob("*.md")) and len(names) == 2
    for name in names:
        assert (tmp_path / name).read_text() == (example / name).read_text()
    conclusions = (example / names[1]).read_text()
    assert "seeds chosen by the data: looks at 3, 4, 5, 6 seeds" in conclusions


def test_distillation_fashion_mnist_example_reproduces_the_committed_tables(tmp_path):
    """analysis/example/distillation/: `sweeps=distillation` on Fashion-MNIST at the example's scale, 3 seeds: 15
    finished full runs in the design's 5 cells, and the committed tables are what tables.py makes of the records."""
    from onebit.results.distillation import ROWS, position

    example = ROOT / "analysis" / "example" / "distillation"
    records, problems = load_records(example / "records")
    assert problems == [] and len(records) == 15
    assert all(r.status == "finished" and not r.smoke and r.options["data"] == "fashion_mnist" for r in records)
    assert sorted(position(r) for r in records) == sorted(ROWS * 3)
    r = run_cli(tables, ["distillation", "--study", "distillation", "--root", example / "records", "--format",
                         "markdown", "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in example.glob("distillation*.md"))
    assert names == sorted(p.name for p in tmp_path.glob("*.md")) and len(names) == 2
    for name in names:
        assert (tmp_path / name).read_text() == (example / name).read_text()
    conclusions = _markdown_frame(example / "distillation_conclusions.md")
    assert list(conclusions["pairs"]) == ["3"] * 4


def test_a_key_at_its_later_added_default_is_named_by_its_value(tmp_path):
    """The study table of the distillation example mixes sign.learnable_threshold=true cells with one at the default
    (false, which the identity leaves out): that cell is labelled False, not None or <absent>."""
    example = ROOT / "analysis" / "example" / "distillation" / "records"
    r = run_cli(tables, ["study", "--study", "distillation", "--root", example, "--format", "csv"])
    assert r.returncode == 0, r.stderr
    frame = pd.read_csv(io.StringIO(r.stdout), dtype=str, keep_default_na=False)
    assert sorted(frame["sign.learnable_threshold"]) == ["False", "True", "True", "True", "True"]
