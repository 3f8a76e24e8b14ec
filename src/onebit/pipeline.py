"""The staged training of Bi-Real section 4.1, as named stages:

1. ``pretrain``   train the real-valued twin (same structure, ``pretrain.activation`` where the Sign is, real
                  weights). Skipped with ``pretrain=none``. Cached by content hash: a sweep trains each twin once.
2. ``binary``     build the binary net, initialise it from the twin with a strict, audited state-dict transfer,
                  train it.
3. ``bn_retrain`` (``bn_retrain=true``) fix the weights to +-1 (the magnitude-aware scale is dropped), freeze
                  every conv and the FC, retrain BatchNorm for one epoch.

A real-valued model (``model=resnet18``) has a single stage, ``real``.

Every stage records its metrics in the run's record (``onebit.records``) and, with ``logger=wandb``, in its own
W&B run (``group`` = study, ``job_type`` = stage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from onebit import config as C
from onebit.records import RECORD_NAME, Record, atomic_write_json, read_record

log = logging.getLogger("onebit")

# keys of the config that do not change what a job computes (where it logs or runs)
NON_SEMANTIC = ("logger", "launcher", "hydra", "output_root", "cache_dir", "study")


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def job_key(cfg: DictConfig) -> str:
    """Identity of a job: the hash of everything that determines its result."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for k in NON_SEMANTIC:
        c.pop(k, None)
    c["trainer"] = {k: v for k, v in c["trainer"].items() if k in ("precision", "deterministic")}
    return _hash(c)


def pretrain_key(cfg: DictConfig) -> str:
    """Identity of a pretrained twin: model, activation, data, optimizer, schedule, epochs, seed, precision."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return _hash({k: c[k] for k in ("model", "pretrain", "data", "optimizer", "scheduler", "seed", "label_smoothing")}
                 | {"trainer": {k: c["trainer"].get(k) for k in ("precision", "deterministic")}})


# ----------------------------------------------------------------------------------------------------------
# Pretrain cache
# ----------------------------------------------------------------------------------------------------------


class PretrainCache:
    """``<cache_dir>/pretrain/<key>/{weights.pt, meta.json}``; meta.json is written last and holds the weights'
    sha256, so an entry is either complete and verified or treated as absent (and rebuilt). A file lock per key
    makes concurrent jobs that need the same twin train it once."""

    def __init__(self, root: Path):
        self.root = Path(root) / "pretrain"

    def lock(self, key: str):
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))

    def load(self, key: str) -> dict | None:
        entry = self.root / key
        meta_path, weights = entry / "meta.json", entry / "weights.pt"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()
            if digest != meta["sha256"]:
                raise ValueError(f"sha256 mismatch ({digest[:12]} != {meta['sha256'][:12]})")
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt entry: report and rebuild
            log.warning("pretrain cache entry %s is corrupt (%s); rebuilding it", entry, e)
            meta_path.unlink(missing_ok=True)
            return None
        return {"state_dict": state, **meta}

    def save(self, key: str, state_dict: dict, meta: dict) -> Path:
        entry = self.root / key
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "meta.json").unlink(missing_ok=True)
        tmp = entry / "weights.pt.tmp"
        torch.save(state_dict, tmp)
        os.replace(tmp, entry / "weights.pt")
        meta = {**meta, "sha256": hashlib.sha256((entry / "weights.pt").read_bytes()).hexdigest(), "key": key}
        atomic_write_json(entry / "meta.json", meta)
        return entry


# ----------------------------------------------------------------------------------------------------------
# Loggers
# ----------------------------------------------------------------------------------------------------------


def flat_options(cfg: DictConfig) -> dict:
    """The chosen option of every group plus the ablation keys, as flat strings (W&B config / record)."""
    try:
        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # composed outside @hydra.main (tests)
        choices = {}
    opts = {g: choices.get(g) for g in C.OPTION_GROUPS}
    if C.is_real_model(cfg):
        opts.update(sign=None, weight=None, pretrain=None)
    shortcut = bool(cfg.model.get("shortcut", cfg.shortcut))  # a model option may pin it (plain18: false)
    opts.update(shortcut=shortcut, seed=int(cfg.seed), epochs=int(cfg.epochs),
                structure=("plain" if not shortcut else cfg.model.get("structure")),
                depth=cfg.model.get("depth"),
                bn_retrain=bool(cfg.bn_retrain), study=cfg.study)
    if "t" in cfg.sign and opts.get("sign") == "ste":
        opts["ste_t"] = float(cfg.sign.t)
    return opts


def make_logger(cfg: DictConfig, stage: str, run_dir: Path, key: str, wandb_config: dict):
    """Lightning logger for one stage; W&B falls back to offline mode (with a warning) if it cannot start."""
    from pytorch_lightning.loggers import CSVLogger

    if cfg.logger.name == "none":
        return None
    if cfg.logger.name == "csv":
        return CSVLogger(str(run_dir), name="csv", version=stage)
    from pytorch_lightning.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.study, job_type=stage,
                  name=f"{cfg.study}-{key[:8]}-{stage}", id=f"{key[:12]}-{stage}", resume="allow",
                  save_dir=str(run_dir), config={**wandb_config, "stage": stage}, reinit="finish_previous")
    try:
        logger = WandbLogger(mode=cfg.logger.mode, **kwargs)
        logger.experiment  # start the run now, so that a failure to connect is handled here
        return logger
    except Exception as e:
        if cfg.logger.mode == "offline":
            raise
        warnings.warn(f"W&B could not start in {cfg.logger.mode} mode ({type(e).__name__}: {e}); logging offline "
                      f"to {run_dir}/wandb instead (upload later with `wandb sync`)", stacklevel=1)
        logger = WandbLogger(mode="offline", **kwargs)
        logger.experiment
        return logger


def finish_logger(logger, failed: bool) -> None:
    if logger is None or type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    cfg: DictConfig
    run_dir: Path
    key: str
    record: Record
    data: Any
    wandb_config: dict


def train_stage(job: Job, stage: str, model: torch.nn.Module, epochs: int) -> dict:
    """Fit ``model`` for ``epochs`` and test it; returns the stage's metrics (also written to the record)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from onebit.module import Classifier

    cfg = job.cfg
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    decays = {role: opt_cfg.pop(key) for role, key in
              (("binary", "binary_weight_decay"), ("real", "weight_decay"), ("bn", "bn_weight_decay"))}
    clip = opt_cfg.pop("latent_weight_clip")
    module = Classifier(model, instantiate(opt_cfg), instantiate(cfg.scheduler), epochs=epochs, decays=decays,
                        num_classes=job.data.num_classes, label_smoothing=cfg.label_smoothing,
                        latent_weight_clip=clip if stage != "pretrain" else None)
    job.record.update_stage(stage, status="running", epochs=epochs)
    logger = make_logger(cfg, stage, job.run_dir, job.key, job.wandb_config)
    if logger is not None and type(logger).__name__ == "WandbLogger":
        job.record.data["wandb"][stage] = {"id": logger.experiment.id, "mode": logger.experiment.settings.mode,
                                           "project": cfg.logger.project}
    callbacks = [ModelCheckpoint(dirpath=job.run_dir / "checkpoints" / stage, save_last=True, save_top_k=0)]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer: pl.Trainer = instantiate(cfg.trainer, max_epochs=epochs, logger=logger if logger else False,
                                      callbacks=callbacks, default_root_dir=str(job.run_dir))
    failed = True
    try:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=job.data)
        fit_seconds = time.perf_counter() - t0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        t1 = time.perf_counter()
        trainer.test(module, datamodule=job.data, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["val/top1_best"] = module.best_val_top1
        result = {"status": "finished", "metrics": metrics, "seconds": round(time.perf_counter() - t0, 3),
                  "fit_seconds": round(fit_seconds, 3), "test_seconds": round(time.perf_counter() - t1, 3),
                  "epochs": epochs, "history": module.history}
        if logger is not None and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update({"best/val_top1": module.best_val_top1})
        failed = False
    finally:
        finish_logger(logger, failed)
        if failed:
            job.record.update_stage(stage, status="failed")
    job.record.update_stage(stage, **result)
    return result


def build_models(job: Job):
    """(twin, binary) for a binary model, (None, model) for a real-valued model. Everything is built before any
    training so that an invalid model option fails fast."""
    cfg, data = job.cfg, job.data
    factory = instantiate(cfg.model, _partial_=True)
    common = dict(in_channels=data.in_channels, num_classes=data.num_classes)
    if "width" in cfg.model and cfg.model.width is None:
        common["width"] = getattr(data, "default_width", 64)
    if C.is_real_model(cfg):
        return None, factory(**common)
    binary = factory(sign=instantiate(cfg.sign), weight=instantiate(cfg.weight), **common)
    twin = None
    if cfg.pretrain.name != "none":
        twin = factory(sign=instantiate(cfg.pretrain.activation), weight=None, **common)
    return twin, binary


def transfer(twin_state: dict, binary: torch.nn.Module) -> dict:
    """Load the twin's weights into the binary model with strict=True and return the audit for the record."""
    result = binary.load_state_dict(twin_state, strict=True)
    n_params = sum(v.numel() for v in twin_state.values())
    digest = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes()
                                     for v in twin_state.values())).hexdigest()[:16]
    return {"strict": True, "tensors": len(twin_state), "elements": n_params, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "sha256": digest}


def run_pretrain(job: Job, twin: torch.nn.Module) -> dict:
    cfg = job.cfg
    cache = PretrainCache(Path(cfg.cache_dir))
    key = pretrain_key(cfg)
    t0 = time.perf_counter()
    with cache.lock(key):
        entry = cache.load(key)
        if entry is None:
            result = train_stage(job, "pretrain", twin, int(cfg.pretrain.epochs))
            cache.save(key, twin.state_dict(), {"metrics": result["metrics"], "seconds": result["seconds"],
                                                "history": result["history"],
                                                "trained_by": str(job.run_dir), "created": time.time()})
            job.record.update_stage("pretrain", cache={"key": key, "hit": False})
            return twin.state_dict()
    job.record.update_stage("pretrain", status="finished", metrics=entry["metrics"], seconds=entry["seconds"],
                            history=entry.get("history", []),
                            wait_seconds=round(time.perf_counter() - t0, 3),
                            cache={"key": key, "hit": True, "trained_by": entry.get("trained_by")})
    return entry["state_dict"]


def run_bn_retrain(job: Job, binary: torch.nn.Module) -> dict:
    """Bi-Real 4.1: weights fixed to +-1 (no scale), conv/FC learning rate 0, BatchNorm retrained for 1 epoch."""
    for m in binary.modules():
        if hasattr(m, "fixed"):
            m.fixed = True
    for m in binary.modules():
        is_bn = isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False):
            p.requires_grad_(is_bn)
    return train_stage(job, "bn_retrain", binary, 1)


def run(cfg: DictConfig, run_dir: Path, explicit_groups: set[str]) -> dict:
    """Run one job; returns its record's data. Raises on failure after recording it."""
    import pytorch_lightning as pl

    from onebit.summary import summarize

    key = job_key(cfg)
    options = flat_options(cfg)
    record = Record.start(run_dir, job_key=key, study=cfg.study, options=options,
                          config=OmegaConf.to_container(cfg, resolve=True))
    try:
        C.check(cfg, explicit_groups)
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        try:  # everything a bad option or value can break, before any training
            data = instantiate(cfg.data)
            data.prepare_data()
            data.setup("fit")
            job = Job(cfg, run_dir, key, record, data, {})
            twin, binary = build_models(job)
        except (ValueError, TypeError, FileNotFoundError, InstantiationException) as e:
            cause = e
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__
            raise C.ConfigError(str(cause).strip().splitlines()[0]) from e
        eff = summarize(binary, tuple(data.input_size)).as_dict()
        record.data["efficiency"] = eff
        record.save()
        job.wandb_config = {**options, "job_key": key, **{f"efficiency/{k}": v for k, v in eff.items()},
                            "config": record.data["config"]}
        if twin is None and C.is_real_model(cfg):
            train_stage(job, "real", binary, int(cfg.epochs))
        else:
            if twin is not None:
                state = run_pretrain(job, twin)
                record.update_stage("binary", transfer=transfer(state, binary))
            train_stage(job, "binary", binary, int(cfg.epochs))
            if cfg.bn_retrain:
                run_bn_retrain(job, binary)
    except BaseException as e:
        record.finish("failed", error=f"{type(e).__name__}: {e}")
        record.data["traceback"] = traceback.format_exc(limit=20)
        record.save()
        raise
    record.finish("finished")
    return record.data


def summary_lines(data: dict) -> list[str]:
    """The short summary printed at the end of a run."""
    lines = [f"onebit: {data['status']} in {data['timings']['seconds']:.1f}s  ({data['run_dir']})"]
    for stage, s in data["stages"].items():
        m = s.get("metrics", {})
        cache = s.get("cache", {})
        note = " (reused from cache)" if cache.get("hit") else ""
        lines.append(f"  {stage:<10} val top-1 {m.get('val/top1', float('nan')):.4f} "
                     f"(best {m.get('val/top1_best', float('nan')):.4f})  test top-1 "
                     f"{m.get('test/top1', float('nan')):.4f}  {s.get('seconds', 0):.1f}s{note}")
    return lines


class SweepSummary(Callback):
    """At the end of a multirun: count finished / failed records of the sweep, print them, exit non-zero if any
    job failed (each job itself never stops the sweep)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = []
        for path in sorted(sweep_dir.glob(f"*/{RECORD_NAME}")):
            try:
                records.append(read_record(path))
            except ValueError as e:
                records.append({"status": "corrupt", "run_dir": str(path.parent), "error": str(e)})
        failed = [r for r in records if r["status"] != "finished"]
        print(f"onebit sweep: {len(records) - len(failed)} finished, {len(failed)} failed  ({sweep_dir})")
        for r in failed:
            print(f"  FAILED {r['run_dir']}: {r.get('error')}")
        if failed:
            raise SystemExit(1)


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def model_from_record(record: dict, stage: str = "binary") -> torch.nn.Module:
    """Rebuild the model of one stage of a recorded run and load its last checkpoint (for analysis and plots)."""
    cfg = OmegaConf.create(record["config"])
    data = instantiate(cfg.data)
    factory = instantiate(cfg.model, _partial_=True)
    kwargs = dict(in_channels=data.in_channels, num_classes=data.num_classes)
    if "width" in cfg.model and cfg.model.width is None:
        kwargs["width"] = getattr(data, "default_width", 64)
    if C.is_real_model(cfg):
        model = factory(**kwargs)
    elif stage == "pretrain":
        model = factory(sign=instantiate(cfg.pretrain.activation), weight=None, **kwargs)
    else:
        model = factory(sign=instantiate(cfg.sign), weight=instantiate(cfg.weight), **kwargs)
    ckpt = Path(record["run_dir"]) / "checkpoints" / stage / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")},
                          strict=True)
    return model.eval()
