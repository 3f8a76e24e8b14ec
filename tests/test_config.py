"""Every option of every config group composes and instantiates; bad options and values stop with one line."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, FAST, run_train
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from onebit.cli import preflight as P
from onebit.core.errors import ConfigError
from onebit.core.registry import BINARY_ONLY, GROUPS, is_real_model
from onebit.nn.quantizers import Quantizer
from onebit.records.record import RunRecord
from onebit.training.build import make_model
from onebit.training.checks import check


def opts(group):
    return P.options(group, CONF)


def test_every_group_has_options():
    for group in GROUPS:
        assert opts(group), group
    assert {"ste", "approx", "swish"} <= set(opts("sign"))
    assert {"plain", "magnitude_aware", "magnitude_aware_official"} <= set(opts("weight"))
    assert {"relu", "clip", "leaky_clip", "none"} <= set(opts("pretrain"))


@pytest.mark.parametrize("group", ["sign", "weight"])
def test_component_options_instantiate(compose_fn, group):
    for name in opts(group):
        cfg = compose_fn([f"{group}={name}"])
        module = instantiate(cfg[group])
        assert isinstance(module, Quantizer) and module.precision == 1


def test_pretrain_options_instantiate(compose_fn):
    for name in opts("pretrain"):
        cfg = compose_fn([f"pretrain={name}"])
        assert cfg.pretrain.name == name
        if name != "none":
            act = instantiate(cfg.pretrain.activation)
            assert isinstance(act, Quantizer) and act.precision == 32


class _Data:  # the two attributes a model needs from the data module
    in_channels, num_classes = 1, 10


@pytest.mark.parametrize("model", opts("model"))
def test_model_options_build(compose_fn, model):
    cfg = compose_fn([f"model={model}", "model.width=8"] if not model.startswith("resnet") else [f"model={model}"])
    real = is_real_model(cfg)
    binary = make_model(cfg, _Data(), "real" if real else "binary")
    x = torch.randn(2, 1, 8, 8) if not model.startswith("resnet") else torch.randn(2, 1, 32, 32)
    assert binary(x).shape == (2, 10)
    if not real:  # the twin has exactly the binary net's weights: the transfer is strict
        binary.load_state_dict(make_model(cfg, _Data(), "twin").state_dict(), strict=True)


def test_optimizer_and_scheduler_options_instantiate(compose_fn):
    p = [torch.nn.Parameter(torch.zeros(3))]
    for o in opts("optimizer"):
        cfg = compose_fn([f"optimizer={o}"])
        c = OmegaConf.to_container(cfg.optimizer)
        for k in ("binary_weight_decay", "bn_weight_decay", "latent_weight_clip"):
            c.pop(k)
        opt = instantiate(c)(p)
        assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups[0]["lr"] == cfg.optimizer.lr
        for s in opts("scheduler"):
            sched = instantiate(compose_fn([f"scheduler={s}"]).scheduler)(opt, 4)
            assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)


def test_step_schedule_fractions_and_epochs():
    from onebit.nn.optim import step

    p = [torch.nn.Parameter(torch.zeros(1))]
    lrs = []
    opt = torch.optim.SGD(p, lr=1.0)
    s = step(opt, 20, milestones=[0.5, 0.75])
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(), s.step()
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01)


def test_trainer_options_instantiate(compose_fn):
    import pytorch_lightning as pl

    for t in opts("trainer"):
        cfg = compose_fn([f"trainer={t}"])
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            assert cfg.trainer.precision == "bf16-mixed"
            continue
        trainer = instantiate(cfg.trainer, max_epochs=1, logger=False)
        assert isinstance(trainer, pl.Trainer)


def test_logger_options(compose_fn, tmp_path):
    from onebit.tracking.loggers import finish_logger, make_logger

    record = RunRecord(job_key="0" * 16, run_id="abc123def456", study="default", run_dir=str(tmp_path),
                       options={"sign": "approx"}, config={})
    for name in opts("logger"):
        cfg = compose_fn([f"logger={name}", "logger.mode=offline"] if name == "wandb" else [f"logger={name}"])
        logger = make_logger(cfg, "binary", record)
        assert (logger is None) == (name == "none")
        if name == "wandb":
            assert logger.experiment.settings.mode == "offline"
            assert logger.experiment.group == "default" and logger.experiment.job_type == "binary"
            assert logger.experiment.config["sign"] == "approx" and logger.experiment.config["stage"] == "binary"
            assert logger.experiment.id == "abc123def456-binary"  # the record's run id: unique per run
        finish_logger(logger, failed=False)


def test_launcher_options_select_hydra_launchers(compose_fn):
    expected = {"basic": "BasicLauncher", "joblib": "JoblibLauncher", "submitit_local": "LocalLauncher",
                "submitit_slurm": "SlurmLauncher"}
    for name in opts("launcher"):
        compose_fn([f"launcher={name}"])
        assert HydraConfig.get().launcher._target_.endswith(expected[name])


@pytest.mark.parametrize("experiment", opts("experiment"))
def test_experiment_overlays_compose(compose_fn, experiment):
    cfg = compose_fn([f"experiment={experiment}"])
    assert cfg.study == experiment
    check(cfg)
    assert cfg.epochs >= 1


def test_paper_recipe_values(compose_fn):
    cfg = compose_fn(["experiment=bireal18_imagenet"])
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.data.batch_size, cfg.epochs) == (0.01, 0.9, 128, 20)
    assert list(cfg.scheduler.milestones) == [10, 15] and cfg.bn_retrain and cfg.pretrain.name == "clip"
    cfg = compose_fn(["experiment=bireal34_imagenet"])
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.epochs, cfg.model.depth) == (0.08, 1024, 40, 34)
    cfg = compose_fn(["experiment=binarydensenet28"])
    assert (cfg.sign.t, cfg.weight.t, cfg.optimizer.latent_weight_clip, cfg.optimizer.lr) == (1.3, 1.3, 1.3, 0.004)


# invalid values: see the bad-input table in tests/test_bad_input.py


def test_sign_option_on_real_model(compose_fn):
    cfg = compose_fn(["model=resnet18", "sign=ste"])
    with pytest.raises(ConfigError, match=r"sign=.* does not apply to model=resnet18, a real-valued model"):
        check(cfg, {"model", "sign"})
    check(compose_fn(["model=resnet18"]), {"model"})  # the defaults alone are fine


@pytest.mark.parametrize("group", BINARY_ONLY)
def test_binary_only_groups_are_refused_and_recorded_as_none_alike(compose_fn, group):
    """One list (onebit.core.registry.BINARY_ONLY) says which groups do not apply to a real-valued model: the
    check refuses each when chosen, and the record's options hold None for each (recipe included: the check and
    the record used to disagree on it)."""
    from onebit.training.jobs import flat_options

    cfg = compose_fn(["model=resnet18"])
    with pytest.raises(ConfigError, match=rf"^{group}=.* does not apply to model=resnet18, a real-valued model"):
        check(cfg, {"model", group})
    assert flat_options(cfg)[group] is None
    assert flat_options(compose_fn(["model=bireal18"]))[group] is not None


def test_preflight_unknown_option():
    with pytest.raises(ConfigError, match=r"unknown option sign='aprox'; valid choices: approx, ste, swish"):
        P.preflight(["-m", "sign=approx,aprox"], CONF)
    P.preflight(["-m", "sign=approx,ste", "model.width=4", "experiment=bireal18_imagenet", "+foo=1"], CONF)
    with pytest.raises(ConfigError, match=r"^Ambiguous value for argument 'sign=approx,ste'; .*add --multirun"):
        P.preflight(["sign=approx,ste"], CONF)  # a sweep without -m: Hydra's words, in one line


@pytest.mark.parametrize("args,message,code", [
    (["sign=aprox"], "onebit: error: unknown option sign='aprox'; valid choices: approx, ste, swish", 2),
    (["model.width=0", *FAST[1:]], "model.width=0 is invalid: must be a positive integer", 2),
    (["optimizer.lr=-1", *FAST], "optimizer.lr=-1 is invalid", 2),
])
def test_cli_bad_input_one_line(tmp_path, args, message, code):
    r = run_train([*args, f"output_root={tmp_path}"])
    assert r.returncode == code, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("onebit:")]
    assert len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    for rec in tmp_path.rglob("record.json"):  # nothing half-written that looks finished
        assert '"status": "finished"' not in rec.read_text()
