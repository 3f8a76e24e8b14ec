"""Checks of the composed config: every bad value stops the job before any training, with one line that names the
value and the valid choices.

- ``onebit.cli.preflight`` composes the command line with Hydra before the job and explains what Hydra refuses
  (unknown options and keys); what Hydra composes but onebit cannot use is refused here.
- The top-level settings' types are checked here, not by a structured config (a dataclass in Hydra's ConfigStore):
  OmegaConf types cannot say "positive" or "non-negative", so these checks would stay; a schema must be registered
  before every composition (tests, analysis); and its typed nodes convert values (``epochs=8.0`` -> 8), which would
  change the resolved config that a job's identity hashes.
- :func:`check` validates the composed config's values; :func:`check_training` builds the optimizer, the schedule
  and the Trainer once, so that what they refuse stops the job before any record, with its real cause.
"""

from __future__ import annotations

import math
import os
import re

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import AcceleratorRegistry

from onebit.core import cluster
from onebit.core.errors import ConfigError, cause_line
from onebit.core.registry import BINARY_ONLY, chosen, is_real_model, options, parent_option
from onebit.nn.bop import check_bop
from onebit.nn.optim import ROLE_DECAY_KEYS
from onebit.nn.speed import check_speed_options
from onebit.tracking.callbacks import user_callbacks
from onebit.tracking.loggers import check_logger


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r} is invalid: must be a positive integer")


def _nonneg_float(key: str, value, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: must be a {'positive' if positive else 'non-negative'} "
                          "finite number")


def check(cfg: DictConfig, explicit_groups: set[str] = frozenset()) -> None:
    """Validate values of the composed config. ``explicit_groups``: groups the user chose on the command line."""
    _positive_int("epochs", cfg.epochs)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is invalid: must be a non-negative integer")
    for key in ("shortcut", "bn_retrain", "resume"):
        if not isinstance(cfg.get(key, True), bool):
            raise ConfigError(f"{key}={cfg[key]!r} is invalid: choose one of true, false")
    if not isinstance(cfg.study, str) or not re.fullmatch(r"[\w.-]+", cfg.study):
        raise ConfigError(f"study={cfg.study!r} is invalid: use letters, digits, '_', '-', '.'")
    if cfg.get("threads") is not None:  # conf/train.yaml: null is torch's default
        if not isinstance(cfg.threads, int) or isinstance(cfg.threads, bool) or cfg.threads < 1:
            raise ConfigError(f"threads={cfg.threads!r} is invalid: must be a positive integer, or null for "
                              "torch's default")
    check_accelerator_name(cfg.trainer.get("accelerator"))
    try:
        check_speed_options(cfg.get("channels_last", False), cfg.get("compile", False))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    opt = cfg.optimizer
    _nonneg_float("optimizer.lr", opt.lr, positive=True)
    for key in ("weight_decay", "binary_weight_decay", "bn_weight_decay"):
        _nonneg_float(f"optimizer.{key}", opt[key])
    if opt.latent_weight_clip is not None:
        _nonneg_float("optimizer.latent_weight_clip", opt.latent_weight_clip, positive=True)
    check_bop(opt, _target_class(opt))  # optimizer=bop: no latent weight to clip or decay
    _check_lists(cfg)
    _nonneg_float("label_smoothing", cfg.label_smoothing)
    if cfg.label_smoothing >= 1:
        raise ConfigError(f"label_smoothing={cfg.label_smoothing!r} is invalid: must be in [0, 1)")
    check_logger(cfg)  # the `_target_` logger class, its arguments and package, W&B's mode
    _check_distill(cfg)
    _check_shortcut(cfg, explicit_groups)
    if is_real_model(cfg):
        chosen = sorted(explicit_groups & set(BINARY_ONLY))
        if chosen:
            raise ConfigError(
                f"{chosen[0]}={_choice_name(cfg, chosen[0])} does not apply to model={_model_name(cfg)}, a real-valued "
                f"model; drop the {'/'.join(chosen)} option or choose a binary model: "
                + ", ".join(o for o in options('model') if not o.startswith('resnet')))
        if cfg.bn_retrain:
            raise ConfigError(f"bn_retrain=true does not apply to model={_model_name(cfg)}, a real-valued model")
    elif cfg.pretrain.name != "none":
        _positive_int("pretrain.epochs", cfg.pretrain.epochs)


def _check_distill(cfg: DictConfig) -> None:
    """``distill`` (conf/distill): alpha in [0, 1], temperature > 0, attention_weight >= 0; ``twin`` needs a
    pretrained twin, ``teacher`` a path (what it names is checked with the data: ``onebit.training.teacher``)."""
    d = cfg.get("distill")
    if not d or d.get("name", "none") == "none" or is_real_model(cfg):
        return
    alpha = d.get("alpha")
    if not _number(alpha) or not 0 <= alpha <= 1:
        raise ConfigError(f"distill.alpha={alpha!r} is invalid: must be a number in [0, 1] (the weight of the "
                          "distillation loss; 1 - alpha weighs cross-entropy)")
    _nonneg_float("distill.temperature", d.get("temperature"), positive=True)
    _nonneg_float("distill.attention_weight", d.get("attention_weight"))
    if d.name == "twin" and cfg.pretrain.name == "none":
        raise ConfigError("distill=twin needs the run's pretrained twin, and pretrain=none trains none: choose "
                          f"pretrain={', '.join(o for o in options('pretrain') if o != 'none')}, or distill=teacher "
                          "distill.teacher=<a finished real-valued run>")
    if d.name == "teacher" and d.get("teacher") in (None, ""):
        raise ConfigError("distill=teacher needs distill.teacher=<a finished real-valued onebit run directory or "
                          ".ckpt of one>, e.g. of model=resnet18")


# what pytorch_lightning.Trainer takes besides its AcceleratorRegistry's names (AcceleratorConnector)
ACCELERATOR_ALIASES = ("auto", "gpu")


def accelerators() -> list[str]:
    """Every ``trainer.accelerator`` name Lightning takes: ``auto``, ``gpu`` and its AcceleratorRegistry's."""
    return [*ACCELERATOR_ALIASES, *sorted(AcceleratorRegistry.available_accelerators())]


def available_accelerators() -> list[str]:
    """The registered accelerators this machine has (each accelerator's own ``is_available()``)."""
    def available(name: str) -> bool:
        try:
            return bool(AcceleratorRegistry[name]["accelerator"].is_available())
        except Exception:  # noqa: BLE001 (an accelerator whose package is missing is not available)
            return False

    return [n for n in sorted(AcceleratorRegistry.available_accelerators()) if available(n)]


def check_accelerator_name(value) -> None:
    """``trainer.accelerator`` must be a name Lightning knows (:func:`accelerators`); an Accelerator object (a
    ``_target_``) or an interpolation is left to Lightning. Whether this machine has it: :func:`check_training`."""
    if isinstance(value, str) and "${" not in value and value not in accelerators():
        raise ConfigError(f"trainer.accelerator={value!r} is unknown; valid accelerators (Lightning's "
                          f"AcceleratorRegistry): {', '.join(accelerators())}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_lists(cfg: DictConfig) -> None:
    """List values: Adam's ``betas`` (two numbers in [0, 1)) and the step schedule's ``milestones`` (numbers)."""
    betas = cfg.optimizer.get("betas")
    if "betas" in cfg.optimizer:
        value = OmegaConf.to_object(betas) if OmegaConf.is_config(betas) else betas
        if not (isinstance(value, list) and len(value) == 2 and all(_number(b) and 0 <= b < 1 for b in value)):
            raise ConfigError(f"optimizer.betas={value!r} is invalid: {_target_name(cfg.optimizer)} needs two "
                              "numbers in [0, 1), e.g. [0.9, 0.999]")
    if "milestones" in cfg.scheduler:
        m = cfg.scheduler.milestones
        value = OmegaConf.to_object(m) if OmegaConf.is_config(m) else m
        if not (isinstance(value, list) and all(_number(x) and x > 0 for x in value)):
            raise ConfigError(f"scheduler.milestones={value!r} is invalid: the step schedule needs a list of "
                              "positive numbers (epochs, or fractions of the stage if < 1), e.g. [0.5, 0.75]")


def _target_class(node: DictConfig):
    """The class a ``_target_`` names, or None when it names none (instantiation reports that later)."""
    try:
        return get_class(str(node.get("_target_")))
    except Exception:  # noqa: BLE001
        return None


def _target_name(node: DictConfig) -> str:
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


def _check_shortcut(cfg: DictConfig, explicit: set[str]) -> None:
    """An explicit ``shortcut=`` must reach the model: refused for a model that pins ``model.shortcut`` to
    another value (``model=plain18 shortcut=true``) or has no ``shortcut`` at all (torchvision's ResNets)."""
    if "shortcut" not in explicit:
        return
    given = str(cfg.shortcut).lower()
    if "shortcut" not in cfg.model:
        raise ConfigError(f"shortcut={given} does not apply to model={_model_name(cfg)} (it has no "
                          "model.shortcut option); drop shortcut")
    if cfg.model._get_node("shortcut")._is_interpolation() or cfg.model.shortcut == cfg.shortcut:
        return
    pinned = str(cfg.model.shortcut).lower()
    name = _model_name(cfg)
    what = "it has no shortcuts" if cfg.model.shortcut is False else f"its model.shortcut is {pinned}"
    parent = parent_option("model", name)
    use = f"use model={parent} shortcut={given}, or " if parent else ""
    raise ConfigError(f"shortcut={given} contradicts model={name} ({what}); {use}drop shortcut")


def check_training(cfg: DictConfig) -> None:
    """The optimizer, the schedule and the Lightning Trainer, built once from the config before any record
    exists (cheap: one dummy parameter, a Trainer that never fits), so that a value they refuse stops the job
    with its real cause in one line instead of failing inside training."""
    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    for key in (*ROLE_DECAY_KEYS.values(), "latent_weight_clip"):
        opt.pop(key, None)
    try:
        optimizer = instantiate(opt)([torch.nn.Parameter(torch.zeros(1))])
    except Exception as e:
        raise ConfigError(f"optimizer={_choice_name(cfg, 'optimizer')} is refused by "
                          f"{opt.get('_target_')}: {cause_line(e)}") from e
    try:
        instantiate(cfg.scheduler)(optimizer, cfg.epochs)
    except Exception as e:
        raise ConfigError(f"scheduler={_choice_name(cfg, 'scheduler')} is refused by "
                          f"{cfg.scheduler.get('_target_')}: {cause_line(e)}") from e
    user_callbacks(cfg)  # conf/callbacks: each instantiated once, refused in one line (onebit.tracking.callbacks)
    try:
        instantiate(cfg.trainer, max_epochs=1, logger=False, plugins=cluster.plugins())
    except Exception as e:
        accelerator, here = cfg.trainer.get("accelerator"), available_accelerators()
        if accelerator in ("gpu", *AcceleratorRegistry.available_accelerators()) and accelerator not in here and \
                not (accelerator == "gpu" and {"cuda", "mps"} & set(here)):
            gpu = (f"; torch.cuda.is_available() is False, torch {torch.__version__} built for CUDA "
                   f"{torch.version.cuda}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}"
                   if accelerator in ("gpu", "cuda") else "")
            raise ConfigError(f"trainer.accelerator={accelerator!r} is not available on this machine "
                              f"({cause_line(e)}{gpu}); available here: {', '.join(here) or 'none'}; "
                              "use trainer=cpu") from e
        raise ConfigError(f"trainer={_choice_name(cfg, 'trainer')} is refused by pytorch_lightning.Trainer: "
                          f"{cause_line(e)}") from e


def _choice_name(cfg: DictConfig, group: str) -> str:
    """The option's name as the user chose it (the config's ``choices``), or ``<set>`` without one."""
    name = chosen(cfg, group)
    return "<set>" if name is None and not cfg.get("choices") else str(name)


def _model_name(cfg: DictConfig) -> str:
    name = _choice_name(cfg, "model")
    return name if name != "<set>" else f"depth-{cfg.model.get('depth')} {cfg.model._target_}"
