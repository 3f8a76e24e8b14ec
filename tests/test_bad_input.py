"""The bad-input table: every bad option, value, file or query stops with one line that names the value (and the
valid choices), a non-zero exit, and nothing left that looks finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, FAST, ROOT, compose_cfg, run_train
from onebit import config as C
from onebit import pipeline
from onebit.records import read_record

# (overrides, expected message) for jobs that compose but must not train
JOB_CASES = [
    (["epochs=abc"], "epochs='abc' is invalid: must be a positive integer"),
    (["epochs=0"], "epochs=0 is invalid: must be a positive integer"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is invalid: must be a positive finite number"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is invalid: must be a non-negative finite number"),
    (["seed=-1"], "seed=-1 is invalid: must be a non-negative integer"),
    (["shortcut=maybe"], "shortcut='maybe' is invalid: choose one of true, false"),
    (["label_smoothing=1.5"], "label_smoothing=1.5 is invalid: must be in [0, 1)"),
    (["pretrain.epochs=0"], "pretrain.epochs=0 is invalid: must be a positive integer"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode='sometimes' is invalid: choose one of offline, online"),
    (["threads=0"], "threads=0 is invalid: must be a positive integer"),
    (["model.width=0"], "model.width=0 is invalid: must be a positive integer"),
    (["model.depth=20"], "model.depth=20 is invalid: choose one of 18, 34, 50, 101, 152"),
    (["model.structure=dense"], "model.structure='dense' is invalid: choose one of bireal, res"),
    (["model.nonlinearity=relu6"], "model.nonlinearity='relu6' is unknown: choose one of none, prelu, rprelu, fprelu"),
    (["model.pad_value=0.5"], "model.pad_value=0.5 is invalid: choose one of 0, -1, 1"),
    (["sign=ste", "sign.t=-1"], "sign.t=-1 is invalid: the STE threshold must be a positive finite number"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid: must be a positive integer"),
    (["model=binarydensenet28", "shortcut=false"], "shortcut=false is invalid for BinaryDenseNet"),
    (["data=cifar10", "data.variant=cifar50"], "data.variant='cifar50' is invalid: choose one of cifar10, cifar100"),
]


def _expect_config_error(tmp_path, overrides, explicit=frozenset()):
    cfg = compose_cfg([*FAST, *overrides], tmp_path)
    with pytest.raises(C.ConfigError) as e:
        pipeline.run(cfg, tmp_path / "run", set(explicit))
    message = str(e.value)
    assert "\n" not in message
    for rec in tmp_path.rglob("record.json"):
        assert read_record(rec)["status"] == "failed"  # recorded as failed, never as finished
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before any training
    return message


@pytest.mark.parametrize("overrides,message", JOB_CASES, ids=[" ".join(c[0]) for c in JOB_CASES])
def test_bad_values(tmp_path, overrides, message):
    assert message in _expect_config_error(tmp_path, overrides)


def test_sign_option_on_a_real_valued_model(tmp_path):
    cfg = compose_cfg([*FAST[1:], "model=resnet18", "sign=ste"], tmp_path)  # no model.width: torchvision's
    with pytest.raises(C.ConfigError, match=r"sign=.* does not apply to model=resnet18, a real-valued model"):
        pipeline.run(cfg, tmp_path / "run", {"model", "sign"})


def test_bn_retrain_on_a_real_valued_model(tmp_path):
    cfg = compose_cfg([*FAST[1:], "model=resnet18", "bn_retrain=true"], tmp_path)
    with pytest.raises(C.ConfigError, match="bn_retrain=true does not apply to model=resnet18"):
        pipeline.run(cfg, tmp_path / "run", {"model"})


def test_missing_data_root(tmp_path):
    msg = _expect_config_error(tmp_path, ["data=cifar10", f"data.root={tmp_path / 'nope'}"])
    assert str(tmp_path / "nope") in msg and "CIFAR-10" in msg


def test_image_folder_without_images(tmp_path):
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
    msg = _expect_config_error(tmp_path, ["data=folder", f"data.root={root}"])
    assert str(root) in msg


def test_corrupt_checkpoint_on_resume(tmp_path):
    cfg = compose_cfg([*FAST, "pretrain=none"], tmp_path)
    rec = pipeline.run(cfg, tmp_path / "run", set())
    run_dir = Path(rec["run_dir"])
    # make it look interrupted, with a torn checkpoint
    data = read_record(run_dir / "record.json")
    data["status"] = "running"
    data["stages"]["binary"]["status"] = "running"
    (run_dir / "record.json").write_text(__import__("json").dumps(data))
    (run_dir / "checkpoints" / "binary" / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(C.ConfigError, match=r"checkpoint .*last.ckpt is corrupt .*resume=false"):
        pipeline.run(compose_cfg([*FAST, "pretrain=none"], tmp_path), tmp_path / "run2", set())
    assert read_record(run_dir / "record.json")["status"] == "failed"


def test_job_already_running_elsewhere(tmp_path):
    cfg = compose_cfg([*FAST, "pretrain=none"], tmp_path)
    lock = pipeline.JobIndex(tmp_path).lock(pipeline.job_key(cfg))
    lock.acquire()
    try:
        with pytest.raises(C.ConfigError, match="this job is already running"):
            pipeline.run(cfg, tmp_path / "run", set())
    finally:
        lock.release()


PREFLIGHT_CASES = [
    (["sign=aprox"], "unknown option sign='aprox'; valid choices: approx, ste, swish"),
    (["-m", "model=bireal18,bireal19"], "unknown option model='bireal19'; valid choices: binarydensenet28"),
    (["experiment=bireal18"], "unknown option experiment='bireal18'; valid choices: "),
    (["epoch=3"], "unknown key 'epoch'; valid top-level keys: "),
    (["model.widht=3"], "unknown key 'model.widht'; valid keys of model: depth, downsample"),
]


@pytest.mark.parametrize("argv,message", PREFLIGHT_CASES, ids=[" ".join(c[0]) for c in PREFLIGHT_CASES])
def test_preflight(argv, message):
    with pytest.raises(C.ConfigError) as e:
        C.preflight(argv, CONF)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(C.ConfigError, match=r"output_root='.*file/sub' is not writable"):
        C.preflight([f"output_root={blocker / 'sub'}"], CONF)


@pytest.mark.parametrize("args,message", [
    (["model.widht=3"], "onebit: error: unknown key 'model.widht'"),
    (["epochs=abc", "logger=none"], "onebit: error: epochs='abc' is invalid"),
])
def test_cli_one_line_and_exit_code(tmp_path, args, message):
    r = run_train([*args, f"output_root={tmp_path}"])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("wandb:")]
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr


def test_analysis_bad_queries(tmp_path):
    tables = [sys.executable, str(ROOT / "analysis" / "tables.py")]
    r = subprocess.run([*tables, "table1", "--root", str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = subprocess.run([*tables, "table1", "--metric", "acc"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'acc'" in r.stderr
