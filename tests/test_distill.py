"""Distillation from a real-valued teacher (conf/distill, onebit/nn/distill.py, onebit/training/teacher.py): the
losses against NumPy re-implementations of their formulas, a frozen teacher inside a real Lightning fit, real runs
on digits with the twin and with a finished real-valued run as teacher, identities, refusals in one line, resume."""

from __future__ import annotations

import re
import signal

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import FAST, compose_cfg, image_folder, only_record, run_train
from omegaconf import OmegaConf, open_dict
from test_resume import essence

from onebit.core.errors import ConfigError
from onebit.nn.distill import attention_loss, blocks, distillation_loss, distribution_loss
from onebit.records import identity as I
from onebit.records.recipe import stages_for
from onebit.records.record import RunRecord, read_record
from onebit.results.cells import option_value, recipe_name
from onebit.training.build import make_data, stage_model
from onebit.training.checks import check
from onebit.training.module import Classifier
from onebit.training.teacher import frozen, teacher_key

# ----------------------------------------------------------------------------------------------------------
# The losses, against their formulas
# ----------------------------------------------------------------------------------------------------------

S = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, -0.3, 1.5], [-2.0, 0.0, 3.0, 1.0]])
T = np.array([[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, -1.0, 2.0], [0.0, -1.0, 2.0, 2.5]])
Y = np.array([0, 3, 2])


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _kd(s, t, temp):
    """ReActNet Eq. 4 with Hinton's temperature: T^2 * (1/n) sum_i sum_c p^T_c log(p^T_c / p^S_c)."""
    ps, pt = _softmax(s / temp), _softmax(t / temp)
    return temp ** 2 * np.mean(np.sum(pt * np.log(pt / ps), axis=1))


def _ce(s, y):
    return float(np.mean(-np.log(_softmax(s)[np.arange(len(y)), y])))


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_distribution_loss_is_reactnets_kl_with_temperature(temp):
    got = distribution_loss(torch.tensor(S), torch.tensor(T), temp)
    assert float(got) == pytest.approx(_kd(S, T, temp), rel=1e-5)
    # the negative form of ReActNet Eq. 4: -(1/n) sum p^T log(p^S / p^T), times T^2
    ps, pt = _softmax(S / temp), _softmax(T / temp)
    assert float(got) == pytest.approx(-temp ** 2 * np.mean(np.sum(pt * np.log(ps / pt), axis=1)), rel=1e-5)
    assert float(distribution_loss(torch.tensor(T), torch.tensor(T), temp)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_mixes_distillation_and_cross_entropy(alpha):
    got = distillation_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), alpha=alpha, temperature=2.0)
    assert float(got) == pytest.approx(alpha * _kd(S, T, 2.0) + (1 - alpha) * _ce(S, Y), rel=1e-5)


def test_attention_transfer_is_real_to_binarys_eq2():
    rng = np.random.default_rng(0)
    student = [rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))]
    teacher = [rng.normal(size=(2, 6, 4, 4)), rng.normal(size=(2, 5, 2, 2))]  # channels may differ

    def q(a):  # Q = sum_c |A_c|^2, flattened, / ||Q||_2
        v = (np.abs(a) ** 2).sum(1).reshape(len(a), -1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    want = sum(np.mean(np.linalg.norm(q(s) - q(t), ord=2, axis=1)) for s, t in zip(student, teacher))
    got = attention_loss([torch.tensor(a) for a in student], [torch.tensor(a) for a in teacher])
    assert float(got) == pytest.approx(want, rel=1e-6)
    total = distillation_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), alpha=0.5, temperature=1.0,
                              attention_weight=3.0, student_blocks=[torch.tensor(a) for a in student],
                              teacher_blocks=[torch.tensor(a) for a in teacher])
    assert float(total) == pytest.approx(0.5 * _kd(S, T, 1.0) + 0.5 * _ce(S, Y) + 3.0 * want, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The teacher inside a real fit: frozen, eval mode, not optimised, not saved
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", [0.0, 1.0])
def test_teacher_is_frozen_in_eval_mode_and_outside_the_module(tmp_path, attention):
    cfg = compose_cfg(["distill=twin", f"distill.attention_weight={attention}", "model.width=4", "threads=1"],
                      tmp_path)
    data = make_data(cfg)
    pretrain, binary = stages_for(cfg)
    assert not pretrain.distill and binary.distill
    teacher = stage_model(cfg, data, pretrain)
    for m in teacher.modules():  # BN running statistics that a training-mode forward would change
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
    teacher = frozen(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = Classifier.for_stage(cfg, binary, data, stage_model(cfg, data, binary), teacher)
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats included
    assert any(not torch.equal(student_before[k], v) for k, v in module.model.state_dict().items())
    assert all(k.startswith("model.") for k in module.state_dict())  # the teacher is not saved
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert all(not h._forward_hooks for h in blocks(module.model))  # attention hooks removed after the fit
    if attention:
        return
    # the training loss is the distilled one; validation stays cross-entropy
    x, y = next(iter(data.train_dataloader()))
    module.eval()
    with torch.no_grad():
        logits, loss = module._distilled(x, y)
        t_logits = teacher(x)
    assert float(loss) == pytest.approx(float(distribution_loss(logits, t_logits)), rel=1e-5)
    assert float(module._loss(logits, y)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))


# ----------------------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------------------

OLD_CONFIGS = [[], ["sign=ste", "pretrain=relu"], ["recipe=two_step_no_distill"], ["model=resnet18"],
               ["pretrain=none", "bn_retrain=true"], ["protocol=paper_sgd"]]


@pytest.mark.parametrize("overrides", OLD_CONFIGS, ids=lambda o: " ".join(o) or "default")
def test_distill_none_leaves_every_key_of_existing_configs_unchanged(tmp_path, overrides):
    """A config composed today (distill=none) has the job, twin and cell keys of the same config without the
    distill node, as every record from before the group was written."""
    now = OmegaConf.to_container(compose_cfg(overrides, tmp_path), resolve=True)
    assert now["distill"] == {"name": "none"}
    before = {k: v for k, v in now.items() if k != "distill"}
    before["choices"] = {k: v for k, v in before["choices"].items() if k != "distill"}
    for key in (I.job_key, I.pretrain_key, I.cell_key):
        assert key(now) == key(before), key.__name__
    assert I.cell_items(now) == I.cell_items(before)


def test_a_teacher_changes_the_job_but_not_the_twin(tmp_path):
    none, twin = compose_cfg([], tmp_path), compose_cfg(["distill=twin"], tmp_path)
    assert I.job_key(none) != I.job_key(twin) and I.cell_key(none) != I.cell_key(twin)
    assert I.pretrain_key(none) == I.pretrain_key(twin)  # the same cached twin serves both
    hotter = compose_cfg(["distill=twin", "distill.temperature=4"], tmp_path)
    assert I.job_key(hotter) != I.job_key(twin)
    # the authors' two-step = two_step_no_distill + the twin; without the teacher it is the old recipe=two_step
    assert I.job_key(compose_cfg(["recipe=two_step"], tmp_path)) == I.job_key(
        compose_cfg(["recipe=two_step_no_distill", "distill=twin"], tmp_path))
    assert I.job_key(compose_cfg(["recipe=two_step", "distill=none"], tmp_path)) == I.job_key(
        compose_cfg(["recipe=two_step_no_distill"], tmp_path))
    assert [s.distill for s in stages_for(compose_cfg(["recipe=two_step", "bn_retrain=true"], tmp_path))] == [
        False, True, True, False]  # both steps, not pretrain, not bn_retrain


# ----------------------------------------------------------------------------------------------------------
# Bad values: one line each, before any record
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["distill=twin", "distill.alpha=1.5"], r"distill.alpha=1.5 is invalid: must be a number in \[0, 1\]"),
    (["distill=twin", "distill.alpha=-0.1"], r"distill.alpha=-0.1 is invalid: must be a number in \[0, 1\]"),
    (["distill=twin", "distill.temperature=0"], "distill.temperature=0 is invalid: must be a positive finite"),
    (["distill=twin", "distill.temperature=-2"], "distill.temperature=-2 is invalid: must be a positive finite"),
    (["distill=twin", "distill.attention_weight=-1"], "distill.attention_weight=-1 is invalid: must be a "
                                                      "non-negative finite number"),
    (["distill=twin", "pretrain=none"], "distill=twin needs the run's pretrained twin, and pretrain=none trains "
                                        "none: choose pretrain=clip, leaky_clip, relu, or distill=teacher"),
    (["distill=teacher"], "distill=teacher needs distill.teacher=<a finished real-valued onebit run directory"),
])
def test_bad_values_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=f"^{message}") as e:
        check(compose_cfg(overrides, tmp_path))
    assert "\n" not in str(e.value)


def test_distill_is_refused_for_a_real_valued_model(tmp_path):
    with pytest.raises(ConfigError, match="^distill=twin does not apply to model=resnet18, a real-valued model"):
        check(compose_cfg(["model=resnet18", "distill=twin"], tmp_path), {"model", "distill"})


# ----------------------------------------------------------------------------------------------------------
# Real runs on digits
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_twin_distilled_run_records_its_teacher(tmp_path):
    r = run_train(["recipe=two_step", *FAST, "pretrain.epochs=1", f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec.status == "finished" and rec.options["distill"] == "twin" and rec.options["recipe"] == "two_step"
    twin = {"source": "twin", "key": rec.stages["pretrain"].cache["key"]}
    assert rec.stages["pretrain"].teacher is None
    assert rec.stages["binary_activations"].teacher == twin == rec.stages["binary"].teacher
    assert twin["key"] == I.pretrain_key(rec.config)
    assert rec.config["distill"] == {"name": "twin", "temperature": 1.0, "alpha": 1.0, "attention_weight": 0.0}
    # the same recipe without its teacher is a different job, served by the same cached twin
    plain = run_train(["recipe=two_step_no_distill", *FAST, "pretrain.epochs=1", f"output_root={tmp_path}"])
    assert plain.returncode == 0, plain.stderr[-3000:]
    other = next(x for x in map(read_record, tmp_path.rglob("record.json")) if x.job_key != rec.job_key)
    assert other.stages["pretrain"].cache["key"] == twin["key"] and other.stages["binary"].teacher is None
    assert other.stages["binary"].metrics != rec.stages["binary"].metrics


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Finished runs to name as teachers: a real-valued ResNet-18 on digits, a binary run on digits, and a
    real-valued ResNet-18 on a 2-class RGB image folder (other data)."""
    root = tmp_path_factory.mktemp("teachers")
    runs = {}
    folder = image_folder(root / "images", n=4, size=(16, 16))
    real = [a for a in FAST if not a.startswith("model.width")]  # torchvision's ResNets have no width
    for name, args in {"real": ["model=resnet18", *real], "binary": ["pretrain=none", *FAST],
                       "other_data": ["model=resnet18", *real, "data=folder", f"data.root={folder}",
                                      "data.image_size=16", "data.num_workers=0", "data.batch_size=4"]}.items():
        r = run_train([*args, f"output_root={root / name}", f"hydra.run.dir={root / name}/run"])
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = root / name / "run"
    return runs


@pytest.mark.slow
def test_a_finished_real_valued_run_teaches_and_is_identified_by_its_weights(tmp_path, teachers):
    run_dir = teachers["real"]
    ckpt = run_dir / "checkpoints" / "real" / "last.ckpt"
    by_dir = compose_cfg(["distill=teacher", f"distill.teacher={run_dir}"], tmp_path)
    by_ckpt = compose_cfg(["distill=teacher", f"distill.teacher={ckpt}"], tmp_path)
    assert by_dir.distill.teacher_key == by_ckpt.distill.teacher_key == teacher_key(run_dir) is not None
    assert I.job_key(by_dir) == I.job_key(by_ckpt)  # the path is not in the identity; the weights are
    copied = tmp_path / "elsewhere.ckpt"
    copied.write_bytes(ckpt.read_bytes())
    assert teacher_key(copied) == teacher_key(ckpt)
    r = run_train(["distill=teacher", f"distill.teacher={run_dir}", *FAST, "pretrain.epochs=1",
                   f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec.stages["binary"].teacher == {"source": "teacher", "key": by_dir.distill.teacher_key,
                                            "path": str(ckpt.resolve())}
    assert rec.config["distill"]["teacher_key"] == by_dir.distill.teacher_key


@pytest.mark.slow
def test_a_teacher_that_cannot_serve_is_refused_in_one_line(tmp_path, teachers):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    cases = {
        str(tmp_path / "missing"): r"distill.teacher=\S+missing does not exist; name a finished real-valued onebit run",
        str(teachers["binary"]): r"distill.teacher=\S+ is not real-valued: its final stage 'binary' trained a binary "
                                 r"model",
        str(teachers["binary"] / "checkpoints" / "binary" / "last.ckpt"):
            r"distill.teacher=\S+ is not real-valued: \S+ is of stage 'binary', a binary model",
        str(bad): r"checkpoint \S+bad.ckpt is corrupt \(\w+\); name a finished real-valued onebit run",
        str(teachers["other_data"]): r"distill.teacher=\S+ cannot teach this run: it was trained for num_classes=2, "
                                     r"and data=digits has num_classes=10; train a real-valued teacher on this data",
        str(tmp_path): r"distill.teacher=\S+ is a directory without a onebit record",
    }
    for path, message in cases.items():
        r = run_train(["distill=teacher", f"distill.teacher={path}", *FAST, f"output_root={tmp_path}/out"])
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("onebit: error:")]
        assert len(lines) == 1, r.stderr[-2000:]
        assert re.search(message, lines[0]), lines[0]
    # attention transfer needs blocks that match: the Bi-Real student's 16 against the ResNet-18's 8
    r = run_train(["distill=teacher", f"distill.teacher={teachers['real']}", "distill.attention_weight=1", *FAST,
                   f"output_root={tmp_path}/out"])
    assert "onebit: error: distill.attention_weight=1: the teacher's blocks do not match the student's" in r.stderr
    assert not list((tmp_path / "out").rglob("record.json"))  # nothing recorded for any refusal


# ----------------------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------------------

RESUME = ["model.width=4", "logger=none", "trainer.deterministic=true", "threads=1", "epochs=3", "pretrain.epochs=1",
          "distill=twin", "distill.alpha=0.5", "distill.temperature=2", "distill.attention_weight=1",
          "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]


@pytest.mark.slow
def test_resume_of_a_distilled_stage_equals_an_uninterrupted_run(tmp_path, train_once):
    uninterrupted = train_once(*RESUME)
    # killed after epoch 2's checkpoint was requested: epoch 1's is written (the writes are asynchronous, in order)
    killed = run_train([*RESUME, f"output_root={tmp_path}"], env={"ONEBIT_KILL_AT": "epoch_end:binary:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert only_record(tmp_path).status == "running"
    again = run_train([*RESUME, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    after = only_record(tmp_path)
    assert after.attempts == 2 and after.stages["binary"].resumed_from
    assert essence(after) == essence(uninterrupted)
    assert after.stages["binary"].teacher == uninterrupted.stages["binary"].teacher


def test_the_old_two_step_records_are_labelled_by_what_they_ran(tmp_path):
    """Records of recipe=two_step from before distillation (no distill node) are two_step_no_distill in tables;
    a distilled two_step run is two_step; the option name alone never decides."""
    def record(overrides, drop_distill=False, option=None):
        cfg = OmegaConf.to_container(compose_cfg(overrides, tmp_path), resolve=True)
        if drop_distill:
            del cfg["distill"]
        opts = {"recipe": option or cfg["choices"]["recipe"], "sign": "approx"}
        if not drop_distill:
            opts["distill"] = cfg["choices"]["distill"]
        return RunRecord(job_key="k", run_id="r", study="s", run_dir=str(tmp_path), options=opts, config=cfg)

    old = record(["recipe=two_step_no_distill"], drop_distill=True, option="two_step")
    assert recipe_name(old) == option_value(old, "recipe") == "two_step_no_distill"
    assert recipe_name(record(["recipe=two_step"])) == "two_step"
    assert recipe_name(record(["recipe=two_step", "distill=none"])) == "two_step_no_distill"
    assert recipe_name(record(["recipe=two_step_no_distill"])) == "two_step_no_distill"
    assert recipe_name(record([])) == "one_step" and recipe_name(record(["distill=twin"])) == "one_step"
    with open_dict(cfg := compose_cfg([], tmp_path)):
        del cfg["recipe"]
    assert recipe_name(RunRecord(job_key="k", run_id="r", study="s", run_dir="d", options={},
                                 config=OmegaConf.to_container(cfg, resolve=True))) == "one_step"
