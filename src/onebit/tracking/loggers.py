"""Experiment trackers: one Lightning logger per stage, chosen by ``logger=<option>``. The local record is written
in every case.

A logger option is a ``_target_`` config (``conf/logger/*.yaml``, as in the lightning-hydra-template): the Lightning
logger class and its arguments. onebit fills the per-stage arguments the class accepts (``inspect.signature``) and
the YAML leaves unset: ``save_dir`` = the run directory and ``version`` = the stage (CSV, TensorBoard:
``<run dir>/<name>/<stage>/``; ``<stage>-attempt<n>`` for attempt n of a resumed run); for W&B the ones below. A
new logger (MLflow, Comet, ...) is one YAML file;
``logger=none`` or ``logger=null`` logs nothing. Keys onebit reads itself, not the logger class: :data:`ONEBIT_KEYS`.

Every logger gets the stage's hyperparameters (:func:`stage_config`). W&B layout: one W&B run per stage,
``group`` = study, ``job_type`` = stage, ``id`` = ``<run id>-<stage>`` (the record's random run id: unique per run,
the same when the run resumes), ``tags`` (:func:`run_tags`), config = :func:`wandb_config`. Offline unless
configured, never prompting; online mode that cannot start goes on offline with one warning (:func:`start_wandb`).
Per-epoch curves are plotted against ``epoch``; the summary holds each curve's best and last value under one key
(:data:`SUMMARIES`). With ``logger.log_artifacts=true`` the twin and each stage's best checkpoint are artifacts.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from onebit.core.errors import ConfigError, cause_line
from onebit.core.paths import CONF_DIR
from onebit.core.registry import TAG_OPTIONS, VAL_TOP1, VAL_TOP1_BEST, options
from onebit.records.layout import stage_checkpoint

# keys of a logger option that onebit reads itself (they are not arguments of the logger class)
ONEBIT_KEYS = {"log_artifacts": "W&B only: log the pretrained twin and each stage's best checkpoint as artifacts"}
WANDB_MODES = ("offline", "online", "disabled")
# optional extras (pyproject.toml) that provide a logger class's package
EXTRAS = {"pytorch_lightning.loggers.TensorBoardLogger": "tensorboard"}
# keys of :func:`stage_config` / :func:`wandb_config` that are not the record's options (nor are the namespaced ones,
# ``efficiency/*`` and ``twin/*``): the W&B loader (``onebit.results.load``) leaves them out of the options
NOT_OPTIONS = ("job_key", "run_id", "smoke", "stage", "config")
# W&B run summary: per metric, the best epoch's value (``max`` or ``min``) beside the last one, under one key
SUMMARIES = {"val/top1": "max", "val/top5": "max", "val/loss": "min", "train/top1": "max", "train/loss": "min"}
# the record's name for a summary's best value (``onebit.stages.stage_metrics``)
BEST_NAMES = {(VAL_TOP1, "max"): VAL_TOP1_BEST}
TAG_MAX = 64  # W&B refuses longer tags


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


def log_artifacts(cfg: DictConfig) -> bool:
    node = cfg.get("logger")
    return bool(node is not None and node.get("log_artifacts", False))


def check_logger(cfg: DictConfig) -> None:
    """The logger option, before any record: the class imports, is a Lightning logger, has its package installed
    and accepts every argument the YAML gives (WandbLogger: its own or wandb.init's, where it passes the others);
    W&B's ``mode``; ``log_artifacts`` a boolean, W&B only. The logger is not built (CometLogger would start an
    experiment)."""
    cls = logger_class(cfg)
    if cls is None:
        return
    choice = _choice()
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


def is_wandb_class(cls) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def is_wandb(logger) -> bool:
    return logger is not None and is_wandb_class(type(logger))


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
        return _wandb_logger(cls, cfg, stage, record, args)
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


def stage_config(record, stage: str) -> dict:
    """The hyperparameters of a stage's logger run: the record's options, ids, smoke reasons (empty: not a smoke
    run), the stage, its model's precision and its twin's origin (:func:`twin_config`)."""
    return {**record.options, "job_key": record.job_key, "run_id": record.run_id, "smoke": record.smoke,
            "stage": stage, **_stage_bits(record, stage), **twin_config(record, stage)}


def wandb_config(record, stage: str) -> dict:
    """A stage's W&B run config: :func:`stage_config`, the final model's ``efficiency/*`` summary and the full
    config (the W&B loader, ``onebit.results.load``, reads the record back from it)."""
    eff = record.efficiency or {}
    return {**stage_config(record, stage), **{f"efficiency/{k}": v for k, v in eff.items()}, "config": record.config}


def _stage_bits(record, stage: str) -> dict:
    """This stage's model precision (``A1/W32`` for step 1 of the two-step scheme), beside the final model's
    ``efficiency/*`` summary."""
    eff = record.stages[stage].efficiency or {} if stage in record.stages else {}
    return {f"efficiency/stage_{k}_bits": eff[k] for k in ("activations", "weights") if k in eff}


def run_tags(record, stage: str) -> list[str]:
    """W&B tags: ``study=<study>``, ``stage=<stage>``, ``<option>=<value>`` for each :data:`TAG_OPTIONS` that is
    set (``bn_retrain=true`` when on), and ``smoke`` for a smoke run; each cut to W&B's 64 characters."""
    tags = [f"study={record.study}", f"stage={stage}"]
    options = dict(record.options)
    if options.get("bn_retrain"):
        tags.append("bn_retrain=true")
    for key in TAG_OPTIONS:
        value = options.get(key)
        if value is not None:
            tags.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    if record.smoke:
        tags.append("smoke")
    return [t[:TAG_MAX] for t in tags]


def twin_stage(record):
    """The stage served by the pretrain cache (the real-valued twin), or ``None``."""
    return next((s for s in record.stages.values() if s.init == "cache"), None)


def twin_config(record, stage: str) -> dict:
    """Where the twin that a later stage descends from came from (the twin stage's ``cache`` entry): ``twin/key``
    (the pretrain cache key), ``twin/cache_hit``, ``twin/trained_by`` (the run directory that trained it) and
    ``twin/trained_by_run`` (its W&B run, ``[entity/]project/id``; ``None`` if it was trained without W&B). Empty
    for the twin's own stage."""
    twin = twin_stage(record)
    if twin is None or twin.name == stage or not twin.cache:
        return {}
    cache = twin.cache
    return {"twin/key": cache["key"], "twin/cache_hit": bool(cache.get("hit")), "twin/trained_by":
            cache.get("trained_by"), "twin/trained_by_run": cache.get("trained_by_run")}


def wandb_run_path(info: dict | None) -> str | None:
    """``[entity/]project/id`` of a stage's W&B run from its record entry (:func:`wandb_info`)."""
    if not info or not info.get("id"):
        return None
    return "/".join(str(p) for p in (info.get("entity"), info.get("project"), info["id"]) if p)


def _wandb_logger(cls, cfg: DictConfig, stage: str, record, args: dict):
    onebit_args = {"group": record.study, "job_type": stage, "name": f"{record.study}-{record.run_id[:8]}-{stage}",
                   "id": f"{record.run_id}-{stage}", "resume": "allow", "save_dir": str(record.run_dir),
                   "config": wandb_config(record, stage), "tags": run_tags(record, stage), "reinit": "finish_previous"}
    kwargs = {**onebit_args, **args, "tags": [*onebit_args["tags"], *(args.get("tags") or [])]}
    if os.environ.get("WANDB_SWEEP_ID") and stage == next(reversed(record.stages)) and os.environ.get("WANDB_RUN_ID"):
        kwargs["id"] = os.environ["WANDB_RUN_ID"]  # under `wandb agent`: the agent's run holds the final stage
    return start_wandb(lambda kw: _start(cls, kw, cfg, record, stage), kwargs)


def start_wandb(start, kwargs: dict):
    """``start(kwargs)``: start a W&B run (``kwargs``: ``wandb.init`` / WandbLogger arguments) and return what
    ``start`` returns. Online mode that cannot start (no API key, for which W&B would prompt; no server within
    ``settings.init_timeout``) goes on offline after one warning line: W&B's service torn down, then a fresh ``id``
    (the service may still hold the one the failed attempt registered). Used by training and ``analysis/tables.py
    --to-wandb``."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if kwargs.get("mode") != "online":
        return start(kwargs)
    try:
        if not wandb_credentials():
            raise RuntimeError("no W&B API key (set WANDB_API_KEY or run `wandb login`)")
        return start(kwargs)
    except Exception as e:  # noqa: BLE001 (W&B raises many types when it cannot start)
        import wandb

        where = kwargs.get("save_dir") or kwargs.get("dir")
        print(f"onebit: warning: W&B could not start in online mode ({cause_line(e)}); logging offline"
              f"{f' to {where}/wandb' if where else ''} instead (upload later with `python -m onebit.cli.sync`)",
              file=sys.stderr)
        with contextlib.suppress(Exception):  # release the half-started online run
            wandb.teardown()
        offline = {**kwargs, "mode": "offline"}
        if kwargs.get("id"):
            offline["id"] = f"{kwargs['id']}-offline-{time.strftime('%Y%m%d%H%M%S')}"
        return start(offline)


def wandb_defaults() -> dict:
    """``project``, ``entity`` and ``mode`` of ``conf/logger/wandb.yaml`` (``WANDB_PROJECT``, ``WANDB_ENTITY``,
    ``WANDB_MODE`` or its defaults), for W&B runs outside training (``analysis/tables.py --to-wandb``)."""
    node = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml")
    return {key: node[key] for key in ("project", "entity", "mode")}


def _start(cls, kwargs: dict, cfg: DictConfig, record, stage: str):
    """Build the WandbLogger and start its run now (so that a failure to connect is handled by the caller)."""
    logger = cls(**kwargs)
    # Lightning's WandbLogger passes `anonymous=None` to wandb.init unless asked for anonymous logging, and W&B
    # 0.23+ warns about any `anonymous` ("The anonymous setting has no effect..."): leave it out at the source
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    run = logger.experiment
    _define_metrics(run)
    if log_artifacts(cfg):
        _use_twin(run, record, stage)
    return logger


def _define_metrics(run) -> None:
    """Curves against ``epoch`` (Lightning logs it with every metric); each :data:`SUMMARIES` metric's summary
    holds its best and last value under its own key (``val/top1`` -> ``{"max": .., "last": ..}``)."""
    run.define_metric("epoch", hidden=True)
    for pattern in ("train/*", "val/*", "lr-*"):
        run.define_metric(pattern, step_metric="epoch")
    for key, best in SUMMARIES.items():
        run.define_metric(key, step_metric="epoch", summary=f"{best},last")


def metrics_from_summary(summary: dict) -> dict:
    """A stage's metrics from its W&B run summary: a :data:`SUMMARIES` metric (``{"max": .., "last": ..}``) gives
    its last value, and its best under the record's name (:data:`BEST_NAMES`, ``val/top1_best``); plain values
    stay as they are."""
    out = {}
    for key, value in summary.items():
        if hasattr(value, "keys"):  # a dict, or the public API's SummarySubDict
            value = {k: value[k] for k in value.keys()}  # noqa: SIM118 (SummarySubDict has no __iter__)
        if isinstance(value, dict) and "last" in value:
            out[key] = value["last"]
            for op in ("max", "min"):
                if (key, op) in BEST_NAMES and op in value:
                    out[BEST_NAMES[key, op]] = value[op]
        elif not isinstance(value, dict):
            out[key] = value
    return out


def wandb_info(logger) -> dict | None:
    if not is_wandb(logger):
        return None
    run = logger.experiment
    return {"id": run.id, "mode": run.settings.mode, "project": run.project,
            **({"entity": run.entity} if run.entity else {})}


def wandb_credentials() -> bool:
    """Whether online W&B can authenticate without asking (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def finish_logger(logger, failed: bool) -> None:
    if not is_wandb(logger):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------------------------------------
# A stage's end: its summary; artifacts (logger.log_artifacts=true): the twin, each stage's best checkpoint
# ----------------------------------------------------------------------------------------------------------


def twin_artifact_name(key: str) -> str:
    return f"twin-{key}"


def log_twin(logger, cfg: DictConfig, key: str, entry: Path, meta: dict) -> None:
    """The pretrained twin (the pretrain cache entry ``entry``: ``weights.pt``, ``meta.json``) as the W&B artifact
    ``twin-<pretrain key>`` (type ``model``), an output of the stage run that trained it; its metadata names the
    key, the run directory and the W&B run that trained it."""
    if not (is_wandb(logger) and log_artifacts(cfg)):
        return
    import wandb

    run = logger.experiment
    art = wandb.Artifact(twin_artifact_name(key), type="model",
                         metadata={"pretrain_key": key, "trained_by": meta.get("trained_by"),
                                   "trained_by_run": meta.get("trained_by_run"), "wandb_run_id": run.id,
                                   "metrics": meta.get("metrics", {})})
    for name in ("weights.pt", "meta.json"):
        art.add_file(str(Path(entry) / name), name=name, policy="immutable")
    run.log_artifact(art)


def _use_twin(run, record, stage: str) -> None:
    """Declare the twin's artifact as an input of the stage it initialises (W&B's lineage graph). wandb 0.31's
    ``Run.use_artifact`` refuses offline runs (``TypeError: Cannot use artifact when in offline mode``), so offline
    the lineage is the ``twin/*`` config (:func:`twin_config`); online a twin trained without artifacts (or
    offline and not yet synced) is not found: one warning, the run goes on."""
    twin = twin_stage(record)
    if twin is None or not twin.cache or record.stages[stage].init != twin.name or run.settings.mode != "online":
        return
    name = f"{twin_artifact_name(twin.cache['key'])}:latest"
    try:
        run.use_artifact(name, type="model")
    except Exception as e:  # noqa: BLE001 (lineage is optional: the run goes on)
        print(f"onebit: warning: W&B artifact {name} could not be declared as input of stage {stage} "
              f"({cause_line(e)}); its origin is in the run config (twin/trained_by_run)", file=sys.stderr)


def log_stage_end(logger, cfg: DictConfig, run_dir: Path | str, stage_record) -> None:
    """Before a stage's W&B run ends: each :data:`SUMMARIES` metric's summary from the stage record's history,
    ``{best: best over epochs, "last": last epoch's}`` (``val/top1``: the record's ``val/top1_best`` and
    ``val/top1``); W&B computes ``define_metric`` summaries per process, so for a resumed stage they would cover
    its last attempt only, while the history holds every epoch of every attempt. With ``logger.log_artifacts``,
    the stage's best checkpoint (``<run dir>/checkpoints/<stage>/best.ckpt``, if any) as the artifact
    ``model-<W&B run id>`` (type ``model``, alias ``best``)."""
    if not is_wandb(logger):
        return
    import wandb

    run = logger.experiment
    for key, best in SUMMARIES.items():
        values = [h[key] for h in stage_record.history if key in h]
        if values:
            run.summary[key] = {best: max(values) if best == "max" else min(values), "last": values[-1]}
    path = stage_checkpoint(run_dir, stage_record.name, "best")
    if log_artifacts(cfg) and path is not None:
        art = wandb.Artifact(f"model-{run.id}", type="model",
                             metadata={"stage": stage_record.name, "run_dir": str(run_dir),
                                       "checkpoint": str(path.relative_to(run_dir)),
                                       "val/top1_best": stage_record.metrics.get("val/top1_best")})
        art.add_file(str(path), name=path.name, policy="immutable")
        run.log_artifact(art, aliases=["best"])


# ----------------------------------------------------------------------------------------------------------


def _choice() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get("logger"))
    except ValueError:  # not under Hydra
        return "<set>"

