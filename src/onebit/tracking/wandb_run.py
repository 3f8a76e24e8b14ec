"""W&B runs of training and the tables: start-up (online falls back to offline with one warning,
:func:`start_wandb`; credentials, :func:`wandb_credentials`), the stage's WandbLogger (:func:`wandb_logger`: group,
job type, id, tags, config), ``define_metric`` curves and summaries, the record's W&B entry (:func:`wandb_info`),
and, with ``logger.log_artifacts=true``, the artifacts: the pretrained twin, each stage's best checkpoint, and the
twin as an input of the stage it initialises (W&B's lineage). wandb itself is imported only where a run is used.

A resumed stage continues its W&B run's steps and fills in the epochs its earlier attempts did not log:
:mod:`onebit.tracking.wandb_resume`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from onebit.core.errors import cause_line
from onebit.core.paths import CONF_DIR
from onebit.core.registry import TAG_OPTIONS
from onebit.records.layout import stage_checkpoint
from onebit.tracking.wandb_record import SUMMARIES, twin_stage, wandb_config
from onebit.tracking.wandb_resume import continue_steps

TAG_MAX = 64  # W&B refuses longer tags


def log_artifacts(cfg: DictConfig) -> bool:
    node = cfg.get("logger")
    return bool(node is not None and node.get("log_artifacts", False))


def is_wandb_class(cls) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def is_wandb(logger) -> bool:
    return logger is not None and is_wandb_class(type(logger))


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


def wandb_run_path(info: dict | None) -> str | None:
    """``[entity/]project/id`` of a stage's W&B run from its record entry (:func:`wandb_info`)."""
    if not info or not info.get("id"):
        return None
    return "/".join(str(p) for p in (info.get("entity"), info.get("project"), info["id"]) if p)


def flush_settings() -> dict:
    """W&B settings that keep a killed attempt's offline history: wandb 0.31's wandb-core buffers the run's
    ``.wandb`` file and writes it every ``x_transaction_log_flush_interval`` seconds (default 15) or at the run's
    end; a process killed (SIGKILL, a preempted job) loses what was not written: for a short stage, the whole file
    but its 7-byte header (not even the run record, and ``wandb sync`` stops on such a file). onebit writes it every
    :data:`FLUSH_SECONDS` instead. Empty where the installed wandb has no such setting."""
    import wandb

    fields = getattr(wandb.Settings, "model_fields", {})
    return {"x_transaction_log_flush_interval": FLUSH_SECONDS} if "x_transaction_log_flush_interval" in fields else {}


FLUSH_SECONDS = 0.5


def wandb_logger(cls, cfg: DictConfig, stage: str, record, args: dict):
    """The stage's WandbLogger, its run started (:func:`start_wandb`); its ``.wandb`` file written every
    :data:`FLUSH_SECONDS` (:func:`flush_settings`; ``logger.settings`` overrides)."""
    onebit_args = {"group": record.study, "job_type": stage, "name": f"{record.study}-{record.run_id[:8]}-{stage}",
                   "id": f"{record.run_id}-{stage}", "resume": "allow", "save_dir": str(record.run_dir),
                   "config": wandb_config(record, stage), "tags": run_tags(record, stage), "reinit": "finish_previous",
                   "settings": flush_settings()}
    kwargs = {**onebit_args, **args, "tags": [*onebit_args["tags"], *(args.get("tags") or [])],
              "settings": {**onebit_args["settings"], **(args.get("settings") or {})}}
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
    continue_steps(run)
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
