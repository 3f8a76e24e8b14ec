"""Experiment trackers, one Lightning logger per stage: W&B (offline unless configured, never prompting), CSV, or
none. The local record is written in every case.

W&B layout: one W&B run per stage, ``group`` = study, ``job_type`` = stage, ``id`` = ``<run id>-<stage>`` (the
record's random run id: unique per run, the same when the run resumes), config = the run's options, job key,
efficiency summary and full config.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig


def wandb_config(record) -> dict:
    """What a W&B run of this record is configured with (the analysis can read runs back from it)."""
    eff = record.efficiency or {}
    return {**record.options, "job_key": record.job_key, "run_id": record.run_id, "smoke": record.smoke,
            **{f"efficiency/{k}": v for k, v in eff.items()}, "config": record.config}


def _stage_bits(record, stage: str) -> dict:
    """This stage's model precision (``A1/W32`` for step 1 of the two-step scheme), beside the final model's
    ``efficiency/*`` summary."""
    eff = record.stages[stage].efficiency or {} if stage in record.stages else {}
    return {f"efficiency/stage_{k}_bits": eff[k] for k in ("activations", "weights") if k in eff}


def make_logger(cfg: DictConfig, stage: str, record):
    """Lightning logger for one stage; W&B falls back to offline mode (with a warning) if it cannot start."""
    from pytorch_lightning.loggers import CSVLogger

    run_dir = Path(record.run_dir)
    if cfg.logger.name == "none":
        return None
    if cfg.logger.name == "csv":
        return CSVLogger(str(run_dir), name="csv", version=stage)
    from pytorch_lightning.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.study, job_type=stage,
                  name=f"{cfg.study}-{record.run_id[:8]}-{stage}", id=f"{record.run_id}-{stage}", resume="allow",
                  save_dir=str(run_dir), config={**wandb_config(record), "stage": stage, **_stage_bits(record, stage)},
                  reinit="finish_previous")
    if os.environ.get("WANDB_SWEEP_ID") and stage == next(reversed(record.stages)) and os.environ.get("WANDB_RUN_ID"):
        kwargs["id"] = os.environ["WANDB_RUN_ID"]  # under `wandb agent`: the agent's run holds the final stage
    try:
        if cfg.logger.mode == "online" and not _wandb_credentials():
            raise RuntimeError("no W&B API key (set WANDB_API_KEY or run `wandb login`)")
        logger = WandbLogger(mode=cfg.logger.mode, settings=wandb.Settings(init_timeout=cfg.logger.init_timeout),
                             **kwargs)
        logger.experiment  # start the run now, so that a failure to connect is handled here
        return logger
    except Exception as e:
        if cfg.logger.mode == "offline":
            raise
        print(f"onebit: warning: W&B could not start in {cfg.logger.mode} mode ({type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else ''}); logging offline to {run_dir}/wandb instead (upload "
              "later with `wandb sync`)", file=sys.stderr)
        try:  # release the half-started online run
            wandb.teardown()
        except Exception:
            pass
        # a fresh id: W&B's service may still hold the one the failed online attempt registered
        kwargs["id"] = f"{kwargs['id']}-offline-{time.strftime('%Y%m%d%H%M%S')}"
        logger = WandbLogger(mode="offline", **kwargs)
        logger.experiment
        return logger


def is_wandb(logger) -> bool:
    return logger is not None and type(logger).__name__ == "WandbLogger"


def wandb_info(logger, cfg: DictConfig) -> dict | None:
    if not is_wandb(logger):
        return None
    return {"id": logger.experiment.id, "mode": logger.experiment.settings.mode, "project": cfg.logger.project}


def _wandb_credentials() -> bool:
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
