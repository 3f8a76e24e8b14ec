"""The staged recipe end to end on digits with real Lightning trainers, the pretrain cache (including two jobs
that need the same net at once), W&B offline runs and a real Hydra multirun from the shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, compose_cfg, run_cli, run_train

from onebit.cli.tables import main as tables_main
from onebit.records.recipe import Stage, stages_for, validate
from onebit.records.record import read_record
from onebit.training import jobs
from onebit.training.build import make_model, prepare_stage, transfer
from onebit.training.cache import PretrainCache


def run_inprocess(tmp_path: Path, overrides: list[str], name: str = "run"):
    cfg = compose_cfg([*FAST, *overrides], tmp_path)
    record, _ = jobs.run(cfg, tmp_path / name, set())
    return record


def test_staged_pipeline_pretrain_binary_bn_retrain(tmp_path):
    rec = run_inprocess(tmp_path, ["pretrain=clip", "bn_retrain=true"])
    assert rec.status == "finished" and list(rec.stages) == ["pretrain", "binary", "bn_retrain"]
    assert [(s.model, s.init) for s in rec.stages.values()] == [("twin", "cache"), ("binary", "pretrain"),
                                                                ("binary", "binary")]
    for stage in rec.stages.values():
        m = stage.metrics
        assert stage.status == "finished" and len(stage.history) == stage.epochs
        assert 0 <= m["val/top1"] <= 1 and 0 <= m["test/top1"] <= 1 and m["val/top1_best"] >= m["val/top1"] - 1e-9
        # final metrics = the last epoch of the history (so a stage resumed after its last epoch has them too)
        assert m["val/top1"] == stage.history[-1]["val/top1"] and m["train/loss"] == stage.history[-1]["train/loss"]
    t = rec.stages["binary"].transfer
    assert t["strict"] and t["missing"] == [] and t["unexpected"] == [] and t["tensors"] > 0
    # the audited transfer hashes exactly the cached twin's weights
    entry = PretrainCache(tmp_path / "cache").load(rec.stages["pretrain"].cache["key"])
    binary = make_model(compose_cfg([*FAST, "pretrain=clip"], tmp_path), _digits())
    assert transfer(entry["state_dict"], binary)["sha256"] == t["sha256"]
    assert read_record(tmp_path / "run" / "record.json").status == "finished"
    assert rec.efficiency["bops"] > 0 and rec.options["pretrain"] == "clip"
    assert rec.smoke == ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                         "trainer.limit_test_batches=2"]


def _digits():
    from onebit.data import DigitsData

    d = DigitsData()
    d.setup("fit")
    return d


def test_bn_retrain_fixes_weights_and_trains_only_bn(tmp_path):
    from onebit.nn.layers import BinaryConv2d
    from onebit.records.record import RunRecord
    from onebit.training.loop import train_stage

    cfg = compose_cfg([*FAST, "pretrain=none", "weight=magnitude_aware", "bn_retrain=true"], tmp_path)
    data = _digits()
    stage = stages_for(cfg)[-1]
    assert (stage.name, stage.trainable, stage.fixed_weights, stage.epochs) == ("bn_retrain", "batchnorm", True, 1)
    record = RunRecord.start(tmp_path / "r", job_key="k", study="s", options={}, config={}, stages=[stage.record()])
    job = jobs.Job(cfg, "k", tmp_path / "r", rank_zero=True, resuming=False)
    model = make_model(cfg, data)
    bn_prefixes = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_stage(stage, model)
    train_stage(job, record, data, stage, model, None)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(bn_prefixes) for k in changed), changed - set(
        k for k in changed if k.startswith(bn_prefixes))
    assert any(k.endswith("running_mean") for k in changed) and any(k.endswith(".weight") for k in changed)
    conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d))
    assert set(conv.weight_quantizer(conv.weight).unique().tolist()) == {-1.0, 1.0}


def test_pretrain_cache_reuse_and_corruption(tmp_path):
    first = run_inprocess(tmp_path, ["pretrain=relu"], "a")
    second = run_inprocess(tmp_path, ["pretrain=relu", "sign=ste"], "b")
    p1, p2 = first.stages["pretrain"], second.stages["pretrain"]
    assert p1.cache["hit"] is False and p2.cache["hit"] is True and p1.cache["key"] == p2.cache["key"]
    assert p1.metrics == p2.metrics and p1.history == p2.history
    assert second.stages["binary"].transfer["sha256"] == first.stages["binary"].transfer["sha256"]
    weights = tmp_path / "cache" / "pretrain" / p1.cache["key"] / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # truncate: the entry must be detected and rebuilt
    third = run_inprocess(tmp_path, ["pretrain=relu", "resume=false"], "c")
    assert third.stages["pretrain"].cache["hit"] is False
    assert PretrainCache(tmp_path / "cache").load(p1.cache["key"]) is not None


def test_concurrent_jobs_train_a_shared_twin_once(tmp_path):
    args = [*FAST, "pretrain=clip", f"output_root={tmp_path}"]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args, f"sign={s}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in ("ste", "approx")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    records = [read_record(p) for p in tmp_path.glob("runs/*/*/record.json")]
    assert len(records) == 2
    hits = sorted(r.stages["pretrain"].cache["hit"] for r in records)
    assert hits == [False, True]


@pytest.mark.parametrize("sign", ["ste", "approx", "swish"])
@pytest.mark.parametrize("weight", ["plain", "magnitude_aware", "magnitude_aware_official"])
def test_each_component_combination_trains(tmp_path, sign, weight):
    rec = run_inprocess(tmp_path, ["pretrain=none", f"sign={sign}", f"weight={weight}"])
    assert rec.status == "finished" and list(rec.stages) == ["binary"]
    assert rec.options["sign"] == sign and rec.options["weight"] == weight


@pytest.mark.parametrize("model", ["res18", "binarydensenet28", "ftbnn18", "bireal50", "resnet18"])
def test_model_families_train(tmp_path, model):
    extra = ["model.growth=4"] if "dense" in model else []
    fast = FAST if model != "resnet18" else FAST[1:]  # torchvision's ResNet has no width option
    cfg = compose_cfg([*fast, f"model={model}", *extra], tmp_path)
    rec, _ = jobs.run(cfg, tmp_path / "run", {"model"})
    assert rec.status == "finished"
    assert list(rec.stages) == (["real"] if model == "resnet18" else ["pretrain", "binary"])


def test_non_finite_loss_stops_the_job_and_is_recorded(tmp_path):
    from onebit.training.module import NonFiniteLossError

    cfg = compose_cfg([*FAST, "pretrain=none", "optimizer=sgd", "optimizer.lr=1e30", "logger=wandb",
                       "logger.mode=offline"], tmp_path)
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        jobs.run(cfg, tmp_path / "run", set())
    rec = read_record(tmp_path / "run" / "record.json")
    assert rec.status == "failed" and rec.error.startswith("NonFiniteLossError: non-finite training loss")
    assert rec.stages["binary"].status == "failed" and "NonFiniteLossError" in rec.traceback
    # the W&B run was finished (as failed): its offline files are closed and no run is left open
    import wandb
    assert wandb.run is None and list((tmp_path / "run" / "wandb").glob("offline-run-*/*.wandb"))


def test_wandb_offline_run_config(tmp_path):
    rec = run_inprocess(tmp_path, ["logger=wandb", "logger.mode=offline", "pretrain=none", "study=wb"])
    assert rec.stages["binary"].wandb == {"id": f"{rec.run_id}-binary", "mode": "offline", "project": "onebit"}
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # W&B (0.2x+, Go core) writes offline runs as protobuf records in run-<id>.wandb; keys are stored verbatim
    blob = next(runs[0].glob("*.wandb")).read_bytes()
    for key in (b"sign", b"weight", b"shortcut", b"stage", b"efficiency/memory_mbit", b"job_key", b"study=wb",
                b"efficiency/stage_activations_bits", b"efficiency/stage_weights_bits", rec.run_id.encode()):
        assert key in blob, key
    assert b"val/top1_best" not in blob  # the best val/top1 is its summary (define_metric), not a second key


def test_output_dirs_never_collide(tmp_path):
    """Two runs (or sweeps) composed in the same second get different directories (random suffix)."""
    from hydra.core.hydra_config import HydraConfig

    run_dirs, sweep_dirs = set(), set()
    for _ in range(3):
        compose_cfg([], tmp_path)
        run_dirs.add(HydraConfig.get().run.dir)
        sweep_dirs.add(HydraConfig.get().sweep.dir)
    assert len(run_dirs) == 3 and len(sweep_dirs) == 3
    assert all(d.startswith(str(tmp_path / "runs")) for d in run_dirs)


def test_multirun_from_the_shell(tmp_path):
    r = run_train(["-m", "sign=approx,ste", "shortcut=true,false", "pretrain=clip", *FAST,
                   f"output_root={tmp_path}", "study=card"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onebit sweep: 4 finished, 0 failed" in r.stdout
    records = [read_record(p) for p in tmp_path.glob("sweeps/card/*/*/record.json")]
    assert len(records) == 4 and all(x.status == "finished" for x in records)
    combos = {(x.options["sign"], x.options["shortcut"]) for x in records}
    assert combos == {("approx", True), ("approx", False), ("ste", True), ("ste", False)}
    trained = [x for x in records if not x.stages["pretrain"].cache["hit"]]
    assert len(trained) == 2  # one real-valued net per shortcut setting, reused by the other sign


def test_multirun_failed_job_does_not_stop_the_sweep(tmp_path):
    r = run_train(["-m", "epochs=1,0", "pretrain=none", *FAST[:1], *FAST[2:], f"output_root={tmp_path}"])
    assert r.returncode == 1
    assert "onebit sweep: 1 finished, 1 failed" in r.stdout
    assert "epochs=0 is invalid" in r.stdout + r.stderr


def test_recipes_are_data(compose_fn):
    """Today's recipes as stage lists; a malformed recipe is refused before anything runs."""
    names = lambda overrides: [(s.name, s.model, s.init, s.cached) for s in stages_for(compose_fn(overrides))]  # noqa
    assert names([]) == [("pretrain", "twin", None, True), ("binary", "binary", "pretrain", False)]
    assert names(["pretrain=none", "bn_retrain=true"]) == [("binary", "binary", None, False),
                                                           ("bn_retrain", "binary", "binary", False)]
    assert names(["model=resnet18"]) == [("real", "real", None, False)]
    with pytest.raises(ValueError, match="initialised from 'twin', which is not an earlier stage"):
        validate((Stage("binary", "binary", 1, init="twin"),))
    with pytest.raises(ValueError, match="two stages named 'a'"):
        validate((Stage("a", "twin", 1), Stage("a", "binary", 1)))


def test_a_new_recipe_runs_through_the_same_loop(tmp_path):
    """A recipe the loop has never seen (twin -> binary -> a second binary stage initialised from the first,
    BN-only) runs, resumes and records through ``run_recipe`` unchanged."""
    from onebit.records.record import RunRecord
    from onebit.training.loop import run_recipe

    cfg = compose_cfg([*FAST, "epochs=1"], tmp_path)
    recipe = validate((Stage("warmup", "twin", 1, cached=True), Stage("main", "binary", 1, init="warmup"),
                       Stage("polish", "binary", 1, init="main", trainable="batchnorm")))
    data = _digits()
    record = RunRecord.start(tmp_path / "r", job_key="k", study="s", options={}, config={},
                             stages=[s.record() for s in recipe])
    run_recipe(jobs.Job(cfg, "k", tmp_path / "r", rank_zero=True, resuming=False), record, data, recipe)
    assert [s.status for s in record.stages.values()] == ["finished"] * 3
    assert record.stages["polish"].transfer["sha256"] != record.stages["main"].transfer["sha256"]
    assert (tmp_path / "r" / "checkpoints" / "polish" / "last.ckpt").exists()


def test_smoke_run_then_full_run_trains_the_full_run(tmp_path):
    """A smoke run (+trainer.limit_train_batches) is its own job with its own twin: the full run after it is
    neither skipped nor initialised from the smoke twin."""
    common = ["model.width=4", "epochs=1", "logger=none", f"output_root={tmp_path}"]
    smoke = run_train([*common, "+trainer.limit_train_batches=2"])
    assert smoke.returncode == 0 and "SMOKE RUN (trainer.limit_train_batches=2)" in smoke.stdout, smoke.stderr
    full = run_train(common)
    assert full.returncode == 0 and "skipped" not in full.stdout and "cached twin" not in full.stdout
    recs = {bool(r.smoke): r for r in map(read_record, tmp_path.rglob("record.json"))}
    assert recs[True].stages["pretrain"].cache["key"] != recs[False].stages["pretrain"].cache["key"]
    assert recs[False].stages["pretrain"].cache["hit"] is False
    again = run_train(common)
    assert "skipped: this job finished before" in again.stdout


def test_model_from_record_of_every_stage_including_a_cache_hit(tmp_path):
    """The twin of a job that reused a cached twin has no checkpoint of its own: it comes from the cache."""
    from onebit.training.checkpoints import model_from_record

    first = run_inprocess(tmp_path, ["pretrain=clip"], "a")
    second = run_inprocess(tmp_path, ["pretrain=clip", "sign=ste"], "b")
    assert second.stages["pretrain"].cache["hit"] and not (tmp_path / "b" / "checkpoints" / "pretrain").exists()
    twin = model_from_record(second, "pretrain")
    cached = PretrainCache(tmp_path / "cache").load(first.stages["pretrain"].cache["key"])["state_dict"]
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in cached.items())
    binary = model_from_record(second)
    assert not binary.training and binary(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_multirun_without_a_study_is_a_study_of_its_own(tmp_path):
    """The design card's ``-m sign=approx,ste`` without ``study=``: its runs are the study ``sweep-sign`` (named by
    the swept keys, said on the console), in ``sweeps/sweep-sign/``, and the tables title it so; a single run beside
    it stays in ``default`` and never joins its table."""
    r = run_train(["-m", "sign=approx,ste", "pretrain=none", *FAST, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onebit sweep: study=sweep-sign (no study= given: named by the swept options" in r.stdout
    records = [read_record(p) for p in tmp_path.glob("sweeps/sweep-sign/*/*/record.json")]
    assert len(records) == 2 and {x.study for x in records} == {"sweep-sign"}
    single = run_train(["pretrain=none", *FAST, f"output_root={tmp_path}"])
    assert single.returncode == 0, single.stderr[-3000:]
    assert read_record(next(tmp_path.glob("runs/*/*/record.json"))).study == "default"
    out = run_cli(tables_main, ["study", "--root", str(tmp_path), "--include-smoke"])  # FAST runs are smoke runs
    assert out.returncode == 0, out.stderr
    assert "Study sweep-sign" in out.stdout and "Study default" in out.stdout, out.stdout
