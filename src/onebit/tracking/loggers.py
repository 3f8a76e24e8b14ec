"""Experiment trackers: one Lightning logger per stage, chosen by ``logger=<option>``. The local record is written
in every case.

A logger option is a ``_target_`` config (``conf/logger/*.yaml``, as in the lightning-hydra-template): the Lightning
logger class and its arguments. onebit fills the per-stage arguments the class accepts (``inspect.signature``) and
the YAML leaves unset: ``save_dir`` = the run directory and ``version`` = the stage (CSV, TensorBoard:
``<run dir>/<name>/<stage>/``; ``<stage>-attempt<n>`` for attempt n of a resumed run); for W&B the ones below. A
new logger (MLflow, Comet, ...) is one YAML file;
``logger=none`` or ``logger=null`` logs nothing. Keys onebit reads itself, not the logger class: :data:`ONEBIT_KEYS`.

Every logger gets the stage's hyperparameters (:func:`~onebit.tracking.wandb_record.stage_config`). W&B layout: one
W&B run per stage, ``group`` = study, ``job_type`` = stage, ``id`` = ``<run id>-<stage>`` (the record's random run
id: unique per run, the same when the run resumes; a resumed attempt writes its own offline directory whose
``_step`` continues the earlier attempts', :func:`~onebit.tracking.wandb_resume.continue_steps`), ``tags``
(:func:`~onebit.tracking.wandb_run.run_tags`), config
= :func:`~onebit.tracking.wandb_record.wandb_config`. Offline unless configured, never prompting; online mode that
cannot start goes on offline with one warning (:func:`~onebit.tracking.wandb_run.start_wandb`). Per-epoch curves
are plotted against ``epoch``; the summary holds each curve's best and last value under one key
(:data:`~onebit.tracking.wandb_record.SUMMARIES`). With ``logger.log_artifacts=true`` the twin and each stage's best
checkpoint are artifacts.

This module is the logger option (its class, arguments and checks, :func:`make_logger`, :func:`finish_logger`);
W&B's start-up, tags and artifacts are in :mod:`onebit.tracking.wandb_run`, and the one mapping between a W&B run
and the record (its config and summary) in :mod:`onebit.tracking.wandb_record`.
"""

from __future__ import annotations

import inspect
import sys

from omegaconf import DictConfig, OmegaConf

from onebit.core.errors import ConfigError, cause_line
from onebit.core.registry import chosen, options
from onebit.tracking.wandb_record import stage_config
from onebit.tracking.wandb_run import is_wandb, is_wandb_class, wandb_logger

# keys of a logger option that onebit reads itself (they are not arguments of the logger class)
ONEBIT_KEYS = {"log_artifacts": "W&B only: log the pretrained twin and each stage's best checkpoint as artifacts"}
WANDB_MODES = ("offline", "online", "disabled")
# optional extras (pyproject.toml) that provide a logger class's package
EXTRAS = {"pytorch_lightning.loggers.TensorBoardLogger": "tensorboard"}


# ----------------------------------------------------------------------------------------------------------
# The logger option: its class and arguments, checked before any record
# ----------------------------------------------------------------------------------------------------------


def logger_class(cfg: DictConfig):
    """The Lightning logger class of ``cfg.logger`` (``None``: no logger). Raises ConfigError naming the value."""
    node = cfg.get("logger")
    if node is None or node.get("_target_") is None:
        if node is not None and "name" in node:  # a config from before `_target_` loggers
            raise ConfigError(f"logger.name={node.name!r}: logger options are `_target_` configs now; "
                              f"choose {', '.join(options('logger'))}")
        return None
    import importlib

    from pytorch_lightning.loggers import Logger

    target = str(node._target_)
    try:
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 (any import failure is the user's value: one line)
        raise ConfigError(f"logger._target_={target!r} cannot be imported ({cause_line(e)}); use a Lightning logger "
                          f"class such as pytorch_lightning.loggers.CSVLogger, or logger={'|'.join(options('logger'))}")
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"logger._target_={target!r} is not a Lightning logger (pytorch_lightning.loggers.Logger)")
    return cls


def logger_arguments(cfg: DictConfig) -> dict:
    """The logger class's arguments from the YAML (without ``_target_`` and :data:`ONEBIT_KEYS`)."""
    args = OmegaConf.to_container(cfg.logger, resolve=True)
    return {k: v for k, v in args.items() if k != "_target_" and k not in ONEBIT_KEYS}


def check_logger(cfg: DictConfig) -> None:
    """The logger option, before any record: the class imports, is a Lightning logger, has its package installed
    and accepts every argument the YAML gives (WandbLogger: its own or wandb.init's, where it passes the others);
    W&B's ``mode``; ``log_artifacts`` a boolean, W&B only. The logger is not built (CometLogger would start an
    experiment)."""
    cls = logger_class(cfg)
    if cls is None:
        return
    choice = _choice(cfg)
    flag = cfg.logger.get("log_artifacts", False)
    if not isinstance(flag, bool):
        raise ConfigError(f"logger.log_artifacts={flag!r} is invalid: choose one of true, false")
    missing = missing_requirement(cls)
    if missing is not None:
        extra = EXTRAS.get(cfg.logger._target_)
        need = f"the optional extra {extra!r}: pip install -e '.[{extra}]'" if extra else "a package"
        raise ConfigError(f"logger={choice} needs {need} (ModuleNotFoundError: {missing})")
    receivers, names = [cls], cls.__name__
    if is_wandb_class(cls):
        mode = cfg.logger.get("mode")
        if mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode={mode!r} is invalid: choose one of {', '.join(WANDB_MODES)}")
        import wandb

        # WandbLogger passes its **kwargs to wandb.init, which takes no **kwargs
        receivers, names = [cls, wandb.init], f"{cls.__name__} or wandb.init"
    elif flag:
        raise ConfigError(f"logger.log_artifacts=true needs logger=wandb (logger={choice} is {cls.__name__})")
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(receivers[-1]).parameters.values()):
        return  # takes any argument
    valid = list(dict.fromkeys(n for r in receivers for n, p in inspect.signature(r).parameters.items()
                               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)))
    for key in logger_arguments(cfg):
        if key not in valid:
            raise ConfigError(f"logger.{key} is not an argument of {names}; valid: {', '.join(valid)}")


def missing_requirement(cls):
    """The package requirement of a Lightning logger class when it is not met, else ``None``, without building the
    logger. Lightning 2.6's logger modules declare their package as ``lightning_utilities`` ``RequirementCache``
    globals (``_MLFLOW_AVAILABLE = RequirementCache("mlflow>=1.0.0")``, ``_COMET_AVAILABLE``, ``_WANDB_AVAILABLE``;
    TensorBoardLogger's base module ``_TENSORBOARD_AVAILABLE`` and ``_TENSORBOARDX_AVAILABLE``, either will do): the
    first of the class's modules (along its bases) when none of them is met."""
    from lightning_utilities.core.imports import RequirementCache

    modules = dict.fromkeys(sys.modules.get(c.__module__) for c in cls.__mro__)
    needs = [v for m in modules if m is not None for v in vars(m).values() if isinstance(v, RequirementCache)]
    return needs[0] if needs and not any(needs) else None


# ----------------------------------------------------------------------------------------------------------
# One logger per stage
# ----------------------------------------------------------------------------------------------------------


def make_logger(cfg: DictConfig, stage: str, record):
    """The stage's Lightning logger (``None`` for no logger); W&B falls back to offline mode (with a warning) if
    it cannot start."""
    cls = logger_class(cfg)
    if cls is None:
        return None
    args = logger_arguments(cfg)
    if is_wandb_class(cls):
        return wandb_logger(cls, cfg, stage, record, args)
    # a resumed attempt logs beside the earlier ones (CSVLogger would delete an existing version's metrics.csv)
    version = stage if record.attempts <= 1 else f"{stage}-attempt{record.attempts}"
    stage_args = _accepted(cls, {"save_dir": str(record.run_dir), "version": version})
    logger = cls(**{**stage_args, **args})
    logger.log_hyperparams(stage_config(record, stage))
    return logger


def _accepted(cls, candidates: dict) -> dict:
    """The candidates that ``cls`` accepts as keyword arguments (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(candidates)
    return {k: v for k, v in candidates.items() if k in params}


def finish_logger(logger, failed: bool) -> None:
    if not is_wandb(logger):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------------------------------------


def _choice(cfg: DictConfig) -> str:
    """The logger option's name (the config's ``choices``), or ``<set>`` without one."""
    return str(chosen(cfg, "logger") or "<set>")
