"""Checkpoints and evaluation, on real runs: ``last.ckpt`` / ``best.ckpt`` written by Lightning's ModelCheckpoint
(best = best val/top1, weights only, overwritten in place, kept across a resume), ``Classifier.load_from_checkpoint``
with no arguments (plain hyperparameters), and ``onebit-eval`` (its numbers equal the record's, nothing on stderr;
bad input is one line), called in-process (``onebit.cli.eval.main``) except one real ``python src/eval.py``."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, TRAINED, copy_run, only_record, run_cli, run_process, run_train
from omegaconf import OmegaConf

from onebit.cli.eval import main as eval_main
from onebit.records.record import read_record

# conftest.TRAINED: a full (non-smoke) run whose validation top-1 peaks before its last epoch (the session's
# shared trained_run)
ARGS = TRAINED


def first_argmax(values: list[float]) -> int:
    """ModelCheckpoint keeps the first of equal scores (it replaces the best only on a strictly greater one)."""
    return values.index(max(values))


def run_eval(*args: str):
    """``onebit-eval args`` in this process (conftest.run_cli)."""
    return run_cli(eval_main, args, cwd=ROOT)


def ok(r):
    """A successful eval: exit 0 and a silent stderr (Lightning's start-up lines and warnings quietened)."""
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    return r


@pytest.fixture
def run(trained_run):
    """The session's shared run of ARGS (conftest.trained_run: read it, never change it)."""
    return trained_run


def val_curve(rec, stage: str = "binary") -> list[float]:
    return [h["val/top1"] for h in rec.stages[stage].history]


def plain(value) -> bool:
    """Only JSON-like data: no pickled objects."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(plain, value))
    return value is None or isinstance(value, (str, int, float, bool))


def test_last_and_best_checkpoints(run):
    folder = Path(run.run_dir, "checkpoints", "binary")
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # in place: no best-v1, no .tmp
    curve = val_curve(run)
    best_epoch = first_argmax(curve)
    assert best_epoch < len(curve) - 1, f"the run was chosen so that best and last differ: {curve}"
    best = torch.load(folder / "best.ckpt", weights_only=True)  # loads without unpickling any object
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (best_epoch, len(curve) - 1)
    # best.ckpt: weights only (nothing resumes from it); the best tracker's state is in last.ckpt
    assert "optimizer_states" not in best and "callbacks" not in best and "optimizer_states" in last
    (tracker,) = [v for k, v in last["callbacks"].items() if k.startswith("BestCheckpoint")]
    assert float(tracker["best_model_score"]) == pytest.approx(max(curve), abs=1e-6)
    assert (folder / "best.ckpt").stat().st_size < (folder / "last.ckpt").stat().st_size
    hp = best["hyper_parameters"]
    assert plain(dict(hp)), hp
    assert dict(hp) == {"config": run.config, "in_channels": 1, "num_classes": 10, "default_width": 32,
                        "stage": {"name": "binary", "model": "binary", "epochs": 6, "init": None, "cached": False,
                                  "trainable": "all", "fixed_weights": False, "optimizer": {}, "distill": False}}


def test_load_from_checkpoint_needs_no_arguments(run):
    from onebit.training.build import make_data, make_model
    from onebit.training.checkpoints import model_weights, stage_module
    from onebit.training.module import Classifier

    best_path = Path(run.run_dir, "checkpoints", "binary", "best.ckpt")
    loaded = Classifier.load_from_checkpoint(best_path).eval()
    cfg = OmegaConf.create(run.config)
    data = make_data(cfg)
    x, _ = next(iter(data.test_dataloader()))
    rebuilt = make_model(cfg, data, "binary")  # independently: the run's model with the checkpoint's weights
    rebuilt.load_state_dict(model_weights(best_path))
    by_eval, origin = stage_module(run, "binary", "best", data)  # what src/eval.py evaluates
    assert origin == {"source": "checkpoint", "path": str(best_path), "epoch": first_argmax(val_curve(run))}
    with torch.no_grad():
        out = loaded(x)
        assert torch.equal(out, rebuilt.eval()(x)) and torch.equal(out, by_eval(x))
        assert not torch.equal(out, stage_module(run, "binary", "last", data)[0](x))  # best is not last here
    optimizer = loaded.configure_optimizers()["optimizer"]  # it could go on training: the run's optimizer
    assert type(optimizer).__name__ == "Adam" and optimizer.param_groups[0]["lr"] == 0.1


def test_older_records_and_checkpoints_still_read(run, tmp_path):
    """A record with the stage ``checkpoints`` summary of earlier onebits reads as today's; a checkpoint with their
    hyperparameters (epochs, decays, label smoothing, clip) and ``best_val_top1`` loads with no arguments, and one
    without hyperparameters (older still) evaluates from the record."""
    from onebit.training.build import make_data
    from onebit.training.checkpoints import stage_module
    from onebit.training.module import Classifier

    old = shutil.copytree(run.run_dir, tmp_path / "old")
    data = json.loads((old / "record.json").read_text())
    data["stages"]["binary"]["checkpoints"] = {"last": "checkpoints/binary/last.ckpt", "best_epoch": 1,
                                               "best": "checkpoints/binary/best.ckpt", "val/top1": 0.5}
    (old / "record.json").write_text(json.dumps(data))
    record = read_record(old / "record.json")
    assert record.stages == run.stages
    record.run_dir = str(old)
    path = old / "checkpoints/binary/last.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"].update(epochs=6, decays={"binary": 0.0, "real": 0.0, "bn": 0.0}, label_smoothing=0.0,
                                    latent_weight_clip=None)
    ckpt["onebit"]["best_val_top1"] = 0.5
    torch.save(ckpt, path)
    loaded = Classifier.load_from_checkpoint(path).eval()
    assert [h["epoch"] for h in loaded.history] == list(range(6)) and loaded.epochs == 6
    del ckpt["hyper_parameters"]
    torch.save(ckpt, path)
    data = make_data(OmegaConf.create(run.config))
    x, _ = next(iter(data.test_dataloader()))
    module, origin = stage_module(record, "binary", "last", data)
    assert origin == {"source": "checkpoint", "path": str(path), "epoch": 5}
    with torch.no_grad():
        assert torch.equal(module(x), loaded(x))


def test_eval_last_on_test_equals_the_record(run, tmp_path):
    out = tmp_path / "eval.json"
    # the one real process of the wrapper `python src/eval.py` (the other tests call onebit.cli.eval.main)
    r = ok(run_process([sys.executable, str(ROOT / "src" / "eval.py"), run.run_dir, "--weights", "last", "--split",
                        "test", "--out", str(out)]))
    lines = r.stdout.strip().splitlines()
    # the epoch is 1-based, as training logs it: the 6th of 6 (Lightning's epoch 5)
    assert len(lines) == 1 and lines[0].startswith(f"onebit eval: run {run.run_id}  stage binary  weights last "
                                                   "(epoch 6/6)  split test  top-1 "), r.stdout
    result = json.loads(out.read_text())
    assert (result["epoch"], result["epochs"]) == (6, 6)
    metrics = run.stages["binary"].metrics
    assert result["top1"] == pytest.approx(metrics["test/top1"], abs=1e-6)
    assert result["top5"] == pytest.approx(metrics["test/top5"], abs=1e-6)
    assert result["loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)
    assert (result["n"], result["stage"], result["weights"], result["split"], result["smoke"]) == \
        (270, "binary", "last", "test", [])
    assert f"top-1 {metrics['test/top1']:.4f}" in lines[0]


def test_eval_best_on_val_from_a_hydra_job_folder(run, tmp_path):
    """RUN may name a Hydra job folder whose job.json points to the run: what older onebit left for a later
    command that reused the run (now that command leaves no folder). The older ``key=value`` spelling
    (``run=DIR weights=best split=val out=FILE``) still works."""
    run = copy_run(run, tmp_path / "outputs")  # the shared run stays as it is
    again = run_train([*ARGS, f"output_root={tmp_path / 'outputs'}"])
    assert again.returncode == 0 and "skipped" in again.stdout, again.stderr[-2000:]
    assert [p.parent for p in (tmp_path / "outputs").rglob("job.json")] == [Path(run.run_dir)]
    job_dir = tmp_path / "outputs" / "runs" / "older-skipped-job"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"job_key": run.job_key, "action": "skipped",
                                                  "record": run.run_dir, "error": None}))
    out = tmp_path / "eval.json"
    ok(run_eval(f"run={job_dir}", "weights=best", "split=val", f"out={out}"))
    result = json.loads(out.read_text())
    curve = val_curve(run)
    assert result["top1"] == pytest.approx(max(curve), abs=1e-6)
    # the JSON's epoch is 1-based, as training logs it (Lightning's 0-based epoch + 1)
    assert (result["epoch"], result["n"], result["run_dir"]) == (first_argmax(curve) + 1, 270, run.run_dir)


def test_best_survives_a_resume(run, tmp_path):
    """Killed at the end of the epoch after the best one (its last.ckpt is written off the training thread, so
    usually not yet: the job resumes from the best epoch's last.ckpt and trains the worse epoch again): the
    worse epoch does not replace best.ckpt, as the tracker's best score comes back from the checkpoint."""
    best_epoch = first_argmax(val_curve(run))
    killed = run_train([*ARGS, f"output_root={tmp_path}"],
                       env={"ONEBIT_KILL_AT": f"epoch_end:binary:{best_epoch + 1}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = run_train([*ARGS, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = only_record(tmp_path)
    assert resumed.attempts == 2 and val_curve(resumed) == val_curve(run)
    best = [torch.load(Path(r.run_dir, "checkpoints/binary/best.ckpt"), weights_only=True) for r in (run, resumed)]
    assert best[1]["epoch"] == best_epoch
    assert all(torch.equal(v, best[1]["state_dict"][k]) for k, v in best[0]["state_dict"].items())


def test_smoke_run_without_validation(tmp_path):
    """No validation (limit_val_batches=0): no best.ckpt and no crash; eval says so for weights=best. The final
    stage (BN retraining: weights fixed to +-1, a state the model is rebuilt with) evaluates on the test split as
    the run's own test did; the output says that the run is a smoke run."""
    args = [a for a in FAST if "limit_val_batches" not in a and "limit_test_batches" not in a]
    r = run_train([*args, "+trainer.limit_val_batches=0", "pretrain=none", "bn_retrain=true",
                   f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec.smoke and rec.status == "finished"
    assert sorted(p.name for p in Path(rec.run_dir, "checkpoints", "binary").iterdir()) == ["last.ckpt"]
    best = run_eval(rec.run_dir, "--stage", "binary", "--weights", "best")
    assert _error(best) == ("onebit: error: weights=best: stage 'binary' never validated (no val/top1 in its "
                            "history, e.g. trainer.limit_val_batches=0), so it has no best.ckpt; use weights=last")
    out = tmp_path / "eval.json"
    last = ok(run_eval(rec.run_dir, f"--out={out}"))
    lines = last.stdout.strip().splitlines()
    assert "stage bn_retrain  weights last (epoch 1/1)  split test" in lines[0] and " n 270 " in lines[0]
    assert lines[1].startswith("onebit eval: note: SMOKE RUN (trainer.limit_train_batches=3")
    assert "the test split was evaluated in full" in lines[1]
    assert json.loads(out.read_text())["top1"] == pytest.approx(rec.stages["bn_retrain"].metrics["test/top1"],
                                                                abs=1e-6)


def _error(r) -> str:
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onebit: error: "), r.stderr[-2000:]
    return lines[0]


def test_bad_input_is_one_line(run, tmp_path):
    d = run.run_dir
    assert _error(run_eval("--weights", "last")) == ("onebit: error: RUN is required: a run directory (with "
                                                     "record.json), or the Hydra job folder of a run (with job.json)")
    assert "RUN is required" in _error(run_eval("weights=last"))  # the older key=value spelling: the same checks
    assert "unknown argument 'foo=1'; valid: run=, stage=, weights=, split=, out=" in _error(run_eval(f"run={d}",
                                                                                                     "foo=1"))
    assert "weights= needs a value" in _error(run_eval(f"run={d}", "weights="))
    assert "unknown argument '--foo'; valid: RUN, --stage, --weights, --split, --out" in _error(run_eval(d, "--foo"))
    for args in ([d, "--weights", "foo"], [f"run={d}", "weights=foo"]):
        line = _error(run_eval(*args))
        assert "unknown --weights 'foo'; valid: last, best" in line, line
    for args in ([d, "--split=foo"], [f"run={d}", "split=foo"]):
        line = _error(run_eval(*args))
        assert "unknown --split 'foo'; valid: test, val" in line, line
    assert f"--out {str(tmp_path)!r} is a directory; give a file name" in _error(run_eval(d, "--out", tmp_path))
    assert f"run='{tmp_path / 'nope'}': no such directory" in _error(run_eval(tmp_path / "nope"))
    assert f"run='{tmp_path / 'nope'}': no such directory" in _error(run_eval(f"run={tmp_path / 'nope'}"))
    assert f"run='{tmp_path}' has no record.json" in _error(run_eval(tmp_path))
    assert "stage='foo' is not a stage of this run; valid: binary" in _error(run_eval(d, "--stage", "foo"))
    assert "stage='foo' is not a stage of this run; valid: binary" in _error(run_eval(f"run={d}", "stage=foo"))
    # copies of the run, damaged by hand
    unfinished = shutil.copytree(d, tmp_path / "unfinished")
    data = json.loads((unfinished / "record.json").read_text())
    data["stages"]["binary"]["status"] = "running"
    (unfinished / "record.json").write_text(json.dumps(data))
    assert "stage='binary' is running, not finished; finished stages: none yet" in _error(run_eval(unfinished))
    missing = shutil.copytree(d, tmp_path / "missing")
    (missing / "checkpoints/binary/best.ckpt").unlink()
    assert (f"weights=best: {missing / 'checkpoints/binary/best.ckpt'} does not exist (deleted?); weights=last "
            "exists") in _error(run_eval(missing, "--weights", "best"))
    corrupt = shutil.copytree(d, tmp_path / "corrupt")
    ckpt = corrupt / "checkpoints/binary/last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert (f"checkpoint {ckpt} is corrupt (" in (line := _error(run_eval(corrupt)))
            and "evaluate weights=best instead" in line)


def test_eval_of_a_cached_twin(tmp_path):
    """A run that reused a cached twin (a cache hit) has no checkpoint of it: weights=last is the cache entry,
    which evaluates as the last checkpoint of the run that trained it; weights=best is one line naming that run."""
    common = [*FAST, f"output_root={tmp_path}"]
    assert run_train([*common, "sign=approx"]).returncode == 0
    assert run_train([*common, "sign=ste"]).returncode == 0  # the same twin: a cache hit
    trainer, reuser = sorted((read_record(p) for p in tmp_path.rglob("record.json")),
                             key=lambda r: bool(r.stages["pretrain"].cache["hit"]))
    assert reuser.stages["pretrain"].cache["hit"] and not Path(reuser.run_dir, "checkpoints", "pretrain").exists()
    cached, own = tmp_path / "cached.json", tmp_path / "own.json"
    r = ok(run_eval(reuser.run_dir, "--stage", "pretrain", "--out", cached))
    assert f"stage pretrain reused a cached twin (trained by {trainer.run_dir})" in r.stdout
    ok(run_eval(trainer.run_dir, "--stage", "pretrain", "--out", own))
    a, b = json.loads(cached.read_text()), json.loads(own.read_text())
    assert (a["source"], b["source"], a["n"]) == ("cache", "checkpoint", 270)
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    line = _error(run_eval(reuser.run_dir, "--stage", "pretrain", "--weights", "best"))
    assert f"reused a cached twin trained by {trainer.run_dir}, so this run has no best.ckpt" in line
    assert f"(run={trainer.run_dir} stage=pretrain)" in line
