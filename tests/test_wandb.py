"""W&B as its users expect, checked in the offline run files W&B writes (no mocks): define_metric summaries (one
key per best value), tags, config (with the twin's lineage), the artifacts flag, the sync command, loggers as
``_target_`` configs, and no W&B noise in a default run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAST, ROOT, compose_cfg, run_cli, run_train, wandb_records

from onebit.cli import sync, tables
from onebit.core.errors import ConfigError
from onebit.records.record import read_record
from onebit.training import jobs
from onebit.training.checks import check

# the default logger (W&B offline), tiny and fast; a smoke run (limit_*_batches)
TINY = [a for a in FAST if not a.startswith("logger=")]


# ----------------------------------------------------------------------------------------------------------
# Reading an offline run: run-<id>.wandb is W&B's transaction log (LevelDB-style log blocks of protobuf Records)
# ----------------------------------------------------------------------------------------------------------


def offline_run(run_dir: Path) -> SimpleNamespace:
    """What W&B would show of an offline run: id, group, job_type, tags, config, metric definitions, the final
    summary and the logged artifacts."""
    (log,) = run_dir.glob("*.wandb")
    run = SimpleNamespace(config={}, summary={}, metrics={}, artifacts=[], used=[], state="finished")
    for r in wandb_records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.id, run.group, run.job_type, run.tags = r.run.run_id, r.run.run_group, r.run.job_type, list(r.run.tags)
            run.config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "metric":
            run.metrics[r.metric.name or r.metric.glob_name] = r.metric
        elif kind == "summary":
            for u in r.summary.update:
                run.summary["/".join(u.nested_key) if u.nested_key else u.key] = json.loads(u.value_json)
        elif kind == "artifact":
            run.artifacts.append(r.artifact)
        elif kind == "use_artifact":
            run.used.append(r.use_artifact)
    run.config.pop("_wandb", None)
    return run


def stage_runs(run_dir: Path) -> dict[str, SimpleNamespace]:
    runs = [offline_run(p) for p in sorted(Path(run_dir, "wandb").glob("offline-run-*"))]
    return {r.job_type: r for r in runs}


def default_env(**extra) -> dict:
    """A user's shell: no W&B or warnings settings from the test session (conftest sets WANDB_SILENT/WANDB_MODE)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_MODE", "PYTHONWARNINGS")}
    return {**env, **extra}


def train(args: list[str]):
    """A real process in a user's shell (default_env: W&B's own settings, warnings on): what W&B prints there."""
    r = run_train(args, env={"WANDB_SILENT": None, "WANDB_MODE": None, "PYTHONWARNINGS": None}, timeout=900,
                  subprocess=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Under one outputs root: ``first`` (twin trained here, artifacts on), ``second`` (the same job again as a new
    run: the twin from the cache), and a two-job multirun."""
    root = tmp_path_factory.mktemp("outputs")
    common = [*TINY, "pretrain=clip", "pretrain.epochs=1", "study=wb", f"output_root={root}"]
    first = train([*common, "logger.log_artifacts=true"])
    second = train([*common, "logger.log_artifacts=true", "resume=false"])
    sweep = train(["-m", "seed=0,1", *TINY, "pretrain=none", "study=wbsweep", f"output_root={root}"])
    recs = sorted((read_record(p) for p in (root / "runs").rglob("record.json")), key=lambda r: r.timings["started"])
    return SimpleNamespace(root=root, first=recs[0], second=recs[1], first_out=first, second_out=second,
                           sweep_out=sweep)


# ----------------------------------------------------------------------------------------------------------


def test_default_run_prints_no_wandb_noise(runs):
    """No W&B deprecation warning (Lightning passed `anonymous`), nor any other `wandb:` line."""
    for out in (runs.first_out, runs.second_out):
        assert "anonymous" not in out.stderr + out.stdout
        assert not [ln for ln in (out.stderr + out.stdout).splitlines() if ln.startswith("wandb:")], out.stderr


def test_summary_holds_best_and_last_under_one_key(runs):
    rec = runs.first
    for stage, st in rec.stages.items():
        run = stage_runs(Path(rec.run_dir))[stage]
        s = run.summary
        assert s["val/top1"] == {"max": pytest.approx(st.metrics["val/top1_best"]),
                                 "last": pytest.approx(st.metrics["val/top1"])}
        assert s["val/loss"]["last"] == pytest.approx(st.metrics["val/loss"]) and set(s["val/loss"]) == {"min", "last"}
        assert set(s["train/top1"]) == {"max", "last"} and set(s["train/loss"]) == {"min", "last"}
        assert s["test/top1"] == pytest.approx(st.metrics["test/top1"])
        assert "val/top1_best" not in s and "best/val_top1" not in s  # one key per best value
        top1 = run.metrics["val/top1"]
        assert top1.step_metric == "epoch" and top1.summary.max and top1.summary.last
        assert run.metrics["val/*"].step_metric == "epoch" and run.metrics["epoch"].options.hidden


def test_tags_and_config(runs):
    rec = runs.first
    by_stage = stage_runs(Path(rec.run_dir))
    assert set(by_stage) == {"pretrain", "binary"}
    for stage, run in by_stage.items():
        assert run.id == f"{rec.run_id}-{stage}" and run.group == "wb"
        assert run.tags == ["study=wb", f"stage={stage}", "data=digits", "model=bireal18", "sign=approx",
                            "weight=magnitude_aware", "pretrain=clip", "recipe=one_step", "distill=none",
                            "shortcut=true", "smoke"]
        assert all(1 <= len(t) <= 64 for t in run.tags)
        c = run.config
        assert c["stage"] == stage and c["run_id"] == rec.run_id and c["job_key"] == rec.job_key
        assert c["sign"] == "approx" and c["smoke"] == rec.smoke and c["config"]["study"] == "wb"
    twin = by_stage["binary"].config
    assert twin["twin/key"] == rec.stages["pretrain"].cache["key"] and twin["twin/cache_hit"] is False
    assert twin["twin/trained_by"] == rec.run_dir and twin["twin/trained_by_run"] == f"onebit/{rec.run_id}-pretrain"
    assert not any(k.startswith("twin/") for k in by_stage["pretrain"].config)


def test_artifacts_twin_and_best_checkpoints(runs):
    rec = runs.first
    by_stage = stage_runs(Path(rec.run_dir))
    key = rec.stages["pretrain"].cache["key"]
    cache = runs.root / "cache" / "pretrain" / key
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["trained_by"] == rec.run_dir and meta["trained_by_run"] == f"onebit/{rec.run_id}-pretrain"
    arts = {a.name: a for a in by_stage["pretrain"].artifacts}
    assert set(arts) == {f"twin-{key}", f"model-{rec.run_id}-pretrain"}
    twin = arts[f"twin-{key}"]
    assert twin.type == "model"
    assert {e.path: e.local_path for e in twin.manifest.contents} == {"weights.pt": str(cache / "weights.pt"),
                                                                     "meta.json": str(cache / "meta.json")}
    assert json.loads(twin.metadata) | {"metrics": None} == {
        "pretrain_key": key, "trained_by": rec.run_dir, "trained_by_run": f"onebit/{rec.run_id}-pretrain",
        "wandb_run_id": f"{rec.run_id}-pretrain", "metrics": None}
    for stage, run in by_stage.items():
        (best,) = [a for a in run.artifacts if a.name == f"model-{rec.run_id}-{stage}"]
        assert best.type == "model" and "best" in best.aliases
        (entry,) = best.manifest.contents
        ckpt = Path(rec.run_dir, "checkpoints", stage, "best.ckpt")
        assert (entry.path, entry.local_path) == ("best.ckpt", str(ckpt))
        assert json.loads(best.metadata)["val/top1_best"] == pytest.approx(rec.stages[stage].metrics["val/top1_best"])
        assert not run.used  # wandb 0.31 refuses use_artifact offline: the lineage is the twin/* config


def test_a_cached_twin_names_the_run_that_trained_it(runs):
    first, second = runs.first, runs.second
    assert second.job_key == first.job_key and second.run_id != first.run_id
    cache = second.stages["pretrain"].cache
    assert cache["hit"] is True and cache["trained_by_run"] == f"onebit/{first.run_id}-pretrain"
    by_stage = stage_runs(Path(second.run_dir))
    assert set(by_stage) == {"binary"}  # the twin was not trained again: no pretrain run
    c = by_stage["binary"].config
    assert (c["twin/cache_hit"], c["twin/trained_by"], c["twin/trained_by_run"]) == (
        True, first.run_dir, f"onebit/{first.run_id}-pretrain")
    assert [a.name for a in by_stage["binary"].artifacts] == [f"model-{second.run_id}-binary"]


def test_records_read_back_from_the_wandb_summary(runs):
    """The analysis's W&B loader turns the define_metric summary back into the record's metrics."""
    from onebit.results.load import records_from_wandb

    rec = runs.first
    recs, problems = records_from_wandb(list(stage_runs(Path(rec.run_dir)).values()))
    assert problems == [] and len(recs) == 1
    (back,) = recs
    assert back.options == rec.options and back.job_key == rec.job_key
    for stage, st in rec.stages.items():
        for key in ("val/top1", "val/top1_best", "val/loss", "train/top1", "test/top1"):
            assert back.stages[stage].metrics[key] == pytest.approx(st.metrics[key]), (stage, key)


def test_sync_lists_every_offline_run_of_runs_and_sweeps(runs):
    root = runs.root
    offline = sorted(p for p in root.rglob("offline-run-*") if p.is_dir())
    assert len(offline) == 5  # first: pretrain + binary; second: binary; the sweep: 2 x binary
    # the one real process of `python -m onebit.cli.sync` (the calls below are onebit.cli.sync.main in-process)
    r = subprocess.run([sys.executable, "-m", "onebit.cli.sync", "--root", str(root), "--dry-run"],
                       capture_output=True, text=True, env=default_env(), check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"onebit sync: 5 offline W&B run(s) under {root}"
    out = r.stdout + r.stderr  # the rest is `wandb sync --dry-run`'s own listing
    assert "Would sync 5 run(s)" in out and all(p.name in out for p in offline)
    # `wandb sync` marks an uploaded run with run-<id>.wandb.synced beside its log: such a run is left out
    (log,) = offline[0].glob("*.wandb")
    marker = log.with_suffix(".wandb.synced")
    marker.touch()
    try:
        r = run_cli(sync.main, [root, "--dry-run"])  # the older spelling: the root as a positional argument
        out = r.stdout + r.stderr
        assert "Skipped 1 synced run(s)" in out and "Would sync 4 run(s)" in out and offline[0].name not in out
    finally:
        marker.unlink()
    # uploading needs a key; without one: one line, never a prompt (the upload itself needs a network)
    r = run_cli(sync.main, ["--root", root], env={"HOME": root, "WANDB_API_KEY": ""})
    assert r.returncode == 1 and r.stderr.strip() == ("onebit: error: no W&B API key: set WANDB_API_KEY or run "
                                                      "`wandb login`, then run this again")
    r = run_cli(sync.main, ["--root", root / "nope"])
    assert r.returncode == 2 and r.stderr == f"onebit: error: {root / 'nope'} is not a directory (the outputs root; " \
        "default: $ONEBIT_OUTPUTS, else outputs)\n"
    r = run_cli(sync.main, ["--root", root, root / "nope"])
    assert r.returncode == 2 and r.stderr.startswith("onebit: error: two roots: ") and r.stderr.count("\n") == 1


def test_onebit_outputs_is_the_default_root_of_sync_and_tables(runs, tmp_path):
    """Without --root, onebit-sync and onebit-tables look under $ONEBIT_OUTPUTS (onebit.core.paths.output_root),
    as training writes there: from another working directory they find the same runs as with --root."""
    root = runs.root
    r = run_cli(sync.main, ["--dry-run"], env={"ONEBIT_OUTPUTS": root}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"onebit sync: 5 offline W&B run(s) under {root}"
    assert "Would sync 5 run(s)" in r.stdout
    args = ["study", "--study", "wbsweep", "--include-smoke", "--format", "csv"]
    by_env = run_cli(tables.main, args, env={"ONEBIT_OUTPUTS": root}, cwd=tmp_path)
    by_flag = run_cli(tables.main, [*args, "--root", root], cwd=tmp_path)
    assert by_env.returncode == 0 and by_flag.returncode == 0, by_env.stderr
    assert "wbsweep" in by_env.stdout + by_env.stderr and by_env.stdout == by_flag.stdout
    assert "(n=2)" in by_env.stdout  # the sweep's two seeds: one cell
    nothing = run_cli(tables.main, args, env={"ONEBIT_OUTPUTS": None}, cwd=tmp_path)  # ./outputs: none here
    assert nothing.returncode == 1 and nothing.stderr.startswith("onebit: error: ") and "outputs" in nothing.stderr


# ----------------------------------------------------------------------------------------------------------
# Loggers as `_target_` configs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["logger._target_=nope.Logger"], ("logger._target_='nope.Logger' cannot be imported (ModuleNotFoundError: No "
                                       "module named 'nope'); use a Lightning logger class")),
    (["logger._target_=collections.OrderedDict"], "logger._target_='collections.OrderedDict' is not a Lightning"),
    (["logger=csv", "+logger.project=x"], ("logger.project is not an argument of CSVLogger; valid: save_dir, name, "
                                           "version, prefix, flush_logs_every_n_steps")),
    (["logger=csv", "+logger.log_artifacts=true"], "logger.log_artifacts=true needs logger=wandb"),
    (["logger.log_artifacts=sometimes"], "logger.log_artifacts='sometimes' is invalid: choose one of true, false"),
    (["logger.mode=sometimes"], "logger.mode='sometimes' is invalid: choose one of offline, online, disabled"),
    (["logger=csv", "logger._target_=pytorch_lightning.loggers.MLFlowLogger", "~logger.name"],
     "needs a package (ModuleNotFoundError: Requirement 'mlflow"),  # a real Lightning logger, mlflow not installed
])
def test_bad_logger_options_are_one_line(tmp_path, overrides, message):
    cfg = compose_cfg(overrides, tmp_path)
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_no_logger(tmp_path):
    from onebit.tracking.loggers import make_logger

    for overrides in (["logger=none"], ["~logger"]):
        cfg = compose_cfg(overrides, tmp_path)
        check(cfg)
        assert make_logger(cfg, "binary", SimpleNamespace(run_dir=str(tmp_path))) is None


@pytest.mark.parametrize("logger", ["tensorboard", "csv"])
def test_file_loggers_one_folder_per_stage(tmp_path, logger):
    cfg = compose_cfg([*TINY, f"logger={logger}", "pretrain=none", "sign=ste"], tmp_path)
    check(cfg)
    rec, _ = jobs.run(cfg, tmp_path / "run", set())
    folder = tmp_path / "run" / logger / "binary"
    hparams = (folder / "hparams.yaml").read_text()
    assert f"run_id: {rec.run_id}" in hparams and "stage: binary" in hparams
    if logger == "tensorboard":
        assert list(folder.glob("events.out.tfevents.*"))
    else:
        header = (folder / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"epoch", "val/top1", "train/loss", "test/top1"} <= set(header) and "val/top1_best" not in header
    assert not (tmp_path / "run" / "wandb").exists()


def test_tensorboard_extra_named_when_missing():
    """The optional extra's name is the one in pyproject.toml (the message is checked with tensorboard missing in
    the report; here tensorboard is installed)."""
    import tomllib

    from onebit.tracking.loggers import EXTRAS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert EXTRAS["pytorch_lightning.loggers.TensorBoardLogger"] in extras
    assert any(d.startswith("tensorboard") for d in extras["tensorboard"])


def test_old_records_with_logger_name_stay_readable(tmp_path):
    """Records from before `_target_` loggers hold config.logger = {"name": ...}: the loader reads them (the
    committed examples), and `logger` is not in a job's identity, so their job keys are unchanged."""
    from onebit.records.identity import job_key
    from onebit.results.load import load_records

    recs, problems = load_records(ROOT / "analysis" / "example" / "records")
    assert recs and not problems and all("name" in r.config["logger"] for r in recs)
    r = recs[0]
    assert job_key({**r.config, "logger": {"_target_": "pytorch_lightning.loggers.CSVLogger"}}) == job_key(r.config)

