"""The bad-input table: every bad option, value, file or query stops with one line that names the value (and the
valid choices), a non-zero exit, and nothing left that looks finished."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF, FAST, compose_cfg, image_folder, run_cli, run_train

from onebit.cli import preflight as P
from onebit.cli.tables import main as tables
from onebit.core.errors import ConfigError, cause_line
from onebit.records.identity import job_key
from onebit.records.record import read_record
from onebit.training import jobs
from onebit.training.checks import check

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
    # list values (issue item 8.3)
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is invalid: Adam needs two numbers in [0, 1), e.g. [0.9, 0.999]"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5] is invalid: Adam needs two numbers in [0, 1)"),
    (["scheduler=step", "scheduler.milestones=[abc]"],
     "scheduler.milestones=['abc'] is invalid: the step schedule needs a list of positive numbers (epochs, or "
     "fractions of the stage if < 1), e.g. [0.5, 0.75]"),
    # what the optimizer / the Trainer refuse keeps its real cause (item 8.1)
    (["optimizer=sgd", "optimizer.momentum=0", "++optimizer.nesterov=true"],
     "optimizer=sgd is refused by torch.optim.SGD: ValueError: Nesterov momentum requires a momentum and zero "
     "dampening"),
    (["++trainer.precision=17"], "trainer=cpu is refused by pytorch_lightning.Trainer: ValueError: Precision 17 is "
                                 "invalid"),
]


def _expect_config_error(tmp_path, overrides, explicit=frozenset(), fast=FAST):
    cfg = compose_cfg([*fast, *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        jobs.run(cfg, tmp_path / "run", set(explicit))
    message = str(e.value)
    assert "\n" not in message
    assert not list(tmp_path.rglob("record.json"))  # refused before any record exists
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before any training
    return message


@pytest.mark.parametrize("overrides,message", JOB_CASES, ids=[" ".join(c[0]) for c in JOB_CASES])
def test_bad_values(tmp_path, overrides, message):
    assert message in _expect_config_error(tmp_path, overrides)


def test_sign_option_on_a_real_valued_model(tmp_path):
    cfg = compose_cfg([*FAST[1:], "model=resnet18", "sign=ste"], tmp_path)  # no model.width: torchvision's
    with pytest.raises(ConfigError, match=r"sign=.* does not apply to model=resnet18, a real-valued model"):
        jobs.run(cfg, tmp_path / "run", {"model", "sign"})


def test_bn_retrain_on_a_real_valued_model(tmp_path):
    cfg = compose_cfg([*FAST[1:], "model=resnet18", "bn_retrain=true"], tmp_path)
    with pytest.raises(ConfigError, match="bn_retrain=true does not apply to model=resnet18"):
        jobs.run(cfg, tmp_path / "run", {"model"})


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
    rec, _ = jobs.run(cfg, tmp_path / "run", set())
    run_dir = Path(rec.run_dir)
    # make it look interrupted, with a torn checkpoint
    data = json.loads((run_dir / "record.json").read_text())
    data["status"] = "running"
    data["stages"]["binary"]["status"] = "running"
    (run_dir / "record.json").write_text(json.dumps(data))
    (run_dir / "checkpoints" / "binary" / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ConfigError, match=r"checkpoint .*last.ckpt is corrupt .*resume=false"):
        jobs.run(compose_cfg([*FAST, "pretrain=none"], tmp_path), tmp_path / "run2", set())
    assert read_record(run_dir / "record.json").status == "failed"


def test_job_already_running_elsewhere(tmp_path):
    cfg = compose_cfg([*FAST, "pretrain=none"], tmp_path)
    lock = jobs.JobIndex(tmp_path).hold(job_key(cfg))
    try:
        with pytest.raises(ConfigError, match="this job is already running"):
            jobs.run(cfg, tmp_path / "run", set())
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
    with pytest.raises(ConfigError) as e:
        P.preflight(argv, CONF)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"output_root='.*file/sub' is not writable"):
        P.preflight([f"output_root={blocker / 'sub'}"], CONF)


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
    r = run_cli(tables, ["table1", "--root", tmp_path / "none"])
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = run_cli(tables, ["table1", "--metric", "acc"])  # one line, as every bad argument
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == ""
    assert r.stderr.startswith("onebit: error: unknown --metric 'acc'; valid: test/top1, ") and "see --help" in r.stderr


# ------------------------------------------------------------------------------------------------------------
# Errors keep their cause and name the key (issue item 8)
# ------------------------------------------------------------------------------------------------------------


def _one_error_line(r, code: int = 2) -> str:
    assert r.returncode == code, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("wandb:")]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


def _nothing_recorded(root: Path) -> None:
    assert not list(root.rglob("record.json")) and not (root / "index").exists()
    assert not list(root.rglob("*.ckpt"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_a_gpu(tmp_path):
    line = _one_error_line(run_train(["trainer=gpu", *FAST, f"output_root={tmp_path}"]))
    assert line.startswith("onebit: error: trainer.accelerator='gpu' is not available on this machine "
                           "(MisconfigurationException: No supported gpu backend found!; torch.cuda.is_available() "
                           "is False, torch "), line
    assert line.endswith("); available here: cpu; use trainer=cpu"), line
    _nothing_recorded(tmp_path)
    assert not list(tmp_path.rglob("job.json")) and not list(tmp_path.rglob(".hydra"))  # no directory left


def test_cause_line_unwraps_hydra_and_dataloader_workers(tmp_path):
    from hydra.utils import instantiate

    with pytest.raises(Exception) as e:
        instantiate({"_target_": "torch.optim.SGD", "params": [torch.zeros(1)], "lr": -1})
    assert cause_line(e.value) == "ValueError: Invalid learning rate: -1"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    from onebit.data import read_image

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            read_image(str(bad))

    with pytest.raises(Exception) as e:  # a worker process: torch wraps the exception in a multi-line message
        next(iter(torch.utils.data.DataLoader(Files(), num_workers=1)))
    assert cause_line(e.value).startswith(f"CorruptImageError: cannot read image {bad} (UnidentifiedImageError: ")


PREFLIGHT_KEY_CASES = [
    (["optimizer.momentum=0.9"],
     "optimizer.momentum is a key of optimizer=sgd, not of optimizer=adam; choose optimizer=sgd, or set a key of "
     "optimizer=adam: betas, binary_weight_decay, bn_weight_decay, latent_weight_clip, lr, weight_decay"),
    (["-m", "optimizer=adam,sgd", "optimizer.momentum=0.9"],
     "optimizer.momentum is a key of optimizer=sgd, not of optimizer=adam"),
    (["optimizer=sgd", "optimizer.betas=[0.9,0.99]"], "optimizer.betas is a key of optimizer=adam, not of "
                                                      "optimizer=sgd"),
    (["experiment=bireal18_imagenet", "optimizer.betas=[0.9,0.99]"],  # the experiment chooses optimizer=sgd
     "optimizer.betas is a key of optimizer=adam, not of optimizer=sgd"),
    (["sign=swish", "sign.t=0.5"], "sign.t is a key of sign=approx, sign=ste, not of sign=swish; choose "
                                   "sign=approx, or set a key of sign=swish: beta"),
    (["scheduler.milestones=[1]"], "scheduler.milestones is a key of scheduler=step, not of scheduler=cosine"),
    (["model=plain18", "model.growth=3"], "model.growth is a key of model=binarydensenet28, model=binarydensenet37, "
                                          "not of model=plain18"),
    (["trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'; valid trainer keys: the pytorch_lightning.Trainer "
                              "arguments accelerator, strategy, devices"),
    (["trainer.max_epochs=3"], "trainer.max_epochs is set by onebit for each stage from epochs= (binary stage) and "
                               "pretrain.epochs= (pretraining); set those instead"),
    (["optimizer.lr=[1"], "cannot parse the override 'optimizer.lr=[1': "),
]


@pytest.mark.parametrize("argv,message", PREFLIGHT_KEY_CASES, ids=[" ".join(c[0]) for c in PREFLIGHT_KEY_CASES])
def test_preflight_names_the_option_that_has_the_key(argv, message):
    with pytest.raises(ConfigError) as e:
        P.preflight(argv, CONF)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("argv", [
    ["optimizer=sgd", "optimizer.momentum=0.8"],
    ["experiment=bireal18_imagenet", "optimizer.momentum=0.8"],  # the experiment chooses sgd
    ["sign=ste", "sign.t=0.5"], ["sign.t=0.5"],  # approx (the default) has t
    ["model=plain18", "model.width=4"],  # plain18 extends bireal18's keys
    ["-m", "sweeps=bireal_table1", "model.width=4"],  # the sweep chooses models: left to Hydra
    ["sweeps=binarydensenet", "model.growth=8"],  # the sweep overrides model=binarydensenet28
    ["model=bireal18", "sweeps=binarydensenet", "model.growth=8"],  # ... and sets model.growth for any model
    ["hydra/launcher=joblib", "hydra/sweeper=basic", "hydra.job.chdir=false"],
    ["trainer=ddp", "trainer.devices=2"], ["+trainer.limit_train_batches=2"],
])
def test_preflight_accepts_valid_syntax(argv):
    assert P.preflight(argv, CONF) == argv


def test_preflight_rewrites_lightning_trainer_arguments():
    argv = ["-m", "trainer.gradient_clip_val=0.1,0.5", "trainer.accumulate_grad_batches=2", "trainer.devices=1"]
    assert P.preflight(argv, CONF) == ["-m", "++trainer.gradient_clip_val=0.1,0.5",
                                       "++trainer.accumulate_grad_batches=2", "trainer.devices=1"]


def test_key_of_another_option_from_the_shell(tmp_path):
    line = _one_error_line(run_train(["optimizer.momentum=0.9", f"output_root={tmp_path}"]))
    assert line.startswith("onebit: error: optimizer.momentum is a key of optimizer=sgd, not of optimizer=adam")
    assert not list(tmp_path.iterdir())


def test_list_values_from_the_shell(tmp_path):
    line = _one_error_line(run_train(["optimizer.betas=[0.9]", *FAST, f"output_root={tmp_path}"]))
    assert line == ("onebit: error: optimizer.betas=[0.9] is invalid: Adam needs two numbers in [0, 1), "
                    "e.g. [0.9, 0.999]")
    _nothing_recorded(tmp_path)


def test_valid_hydra_and_lightning_syntax_end_to_end(tmp_path):
    """hydra/<group>=<option> and Trainer arguments absent from conf/trainer/ run; a multirun over a model that
    pins shortcut (plain18) with no explicit shortcut is not refused."""
    r = run_train(["-m", "hydra/launcher=joblib", "hydra/sweeper=basic", "model=bireal18,plain18", "pretrain=none",
                   "threads=1", "trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2", *FAST,
                   f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    records = [read_record(p) for p in tmp_path.rglob("record.json")]
    assert sorted(rec.options["model"] for rec in records) == ["bireal18", "plain18"]
    for rec in records:
        assert rec.status == "finished"
        assert rec.config["trainer"]["gradient_clip_val"] == 0.5
        assert rec.config["trainer"]["accumulate_grad_batches"] == 2


# ------------------------------------------------------------------------------------------- corrupt data files
def _image_tree(root: Path, n: int = 2) -> None:
    image_folder(root, n=n, size=(8, 8))


def test_corrupt_image_from_the_shell(tmp_path):
    """Checked at setup (every image of a tree up to IMAGE_CHECK_LIMIT), so the job stops before any record."""
    root = tmp_path / "imgs"
    _image_tree(root)
    bad = root / "val" / "dog" / "1.png"
    bad.write_bytes(b"garbage, not a PNG")
    out = tmp_path / "out"
    line = _one_error_line(run_train(["data=folder", f"data.root={root}", "data.num_workers=0", "data.image_size=8",
                                      "pretrain=none", *FAST, f"output_root={out}"]))
    assert line.startswith(f"onebit: error: cannot read image {bad} (UnidentifiedImageError: "), line
    assert line.endswith("; replace or delete it")
    _nothing_recorded(out)


def test_truncated_image_is_found_at_setup_and_at_first_read(tmp_path):
    from onebit.data import CorruptImageError, FolderData

    _image_tree(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # a valid PNG header, the image data cut short
    with pytest.raises(CorruptImageError, match=f"cannot read image {bad} "):
        FolderData(root=str(tmp_path), image_size=8, num_workers=0).setup()
    # first read (a tree too big to check at setup): the loader names the file
    dm = FolderData(root=str(tmp_path), image_size=8, num_workers=0)
    dataset = dm._folder("train", ["cat", "dog"], dm.train_transform)
    with pytest.raises(CorruptImageError, match=f"cannot read image {bad} "):
        dataset[[p for p, _ in dataset.samples].index(str(bad))]


def _fake_cifar10(root: Path) -> Path:
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(20)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


def test_truncated_cifar_batch_from_the_shell(tmp_path):
    """Every CIFAR file is read at setup (torchvision loads them whole), so the job stops before any record."""
    folder = _fake_cifar10(tmp_path / "cifar")
    batch = folder / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:1000])
    out = tmp_path / "out"
    line = _one_error_line(run_train(["data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.verify=false",
                                      "data.val_size=10", "data.num_workers=0", "pretrain=none", *FAST,
                                      f"output_root={out}"]))
    assert line == (f"onebit: error: {batch} is not a readable CIFAR-10 file (UnpicklingError: pickle data was "
                    "truncated); replace it (data.download=true fetches a fresh copy)")
    _nothing_recorded(out)


def test_cifar_md5_failure_names_the_files(tmp_path):
    folder = _fake_cifar10(tmp_path)
    msg = _expect_config_error(tmp_path, ["data=cifar10", f"data.root={tmp_path}", "data.num_workers=0"])
    assert msg.startswith(f"{folder / 'data_batch_1'}, {folder / 'data_batch_2'}, ")
    assert "fails torchvision's md5 check" in msg and "data.verify=false" in msg


# -------------------------------------------------------------------------------------------------- output root
def test_unwritable_outputs_environment_variable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _one_error_line(run_train(["model.width=4"], env={"ONEBIT_OUTPUTS": str(blocker / "sub")}))
    assert line == (f"onebit: error: ONEBIT_OUTPUTS='{blocker / 'sub'}' is not writable ({blocker} is not a "
                    "directory); set ONEBIT_OUTPUTS to another directory, or pass output_root=")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_quoted_output_root_is_read_like_hydra(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _one_error_line(run_train([f'output_root="{blocker / "sub"}"'], cwd=tmp_path))
    assert line.startswith(f"onebit: error: output_root='{blocker / 'sub'}' is not writable ({blocker} is not a "
                           "directory)"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no directory named '"' or 'outputs'
    spaced = tmp_path / "x y" / "out"
    assert P.preflight([f"output_root='{spaced}'"], CONF) == [f"output_root='{spaced}'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the check creates nothing


def test_writability_check_creates_nothing(tmp_path):
    P.check_writable(str(tmp_path / "a" / "b" / "c"))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- shortcut vs model
def test_explicit_shortcut_contradicting_the_model(tmp_path):
    msg = _expect_config_error(tmp_path, ["model=plain18", "shortcut=true"], explicit={"model", "shortcut"})
    assert msg == ("shortcut=true contradicts model=plain18 (it has no shortcuts); use model=bireal18 shortcut=true, "
                   "or drop shortcut")
    msg = _expect_config_error(tmp_path, ["model=resnet18", "shortcut=false"], explicit={"model", "shortcut"},
                               fast=FAST[1:])
    assert msg == "shortcut=false does not apply to model=resnet18 (it has no model.shortcut option); drop shortcut"
    # agreeing with the model, or not given explicitly (a sweep over models), is fine
    check(compose_cfg([*FAST, "model=plain18", "shortcut=false"], tmp_path), {"model", "shortcut"})
    check(compose_cfg([*FAST, "model=plain18"], tmp_path), {"model"})


def test_explicit_shortcut_contradicting_the_model_from_the_shell(tmp_path):
    line = _one_error_line(run_train(["model=plain18", "shortcut=true", *FAST, f"output_root={tmp_path}"]))
    assert line == ("onebit: error: shortcut=true contradicts model=plain18 (it has no shortcuts); use "
                    "model=bireal18 shortcut=true, or drop shortcut")
    _nothing_recorded(tmp_path)
