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
import sys
import time
import traceback
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

# keys of the config that do not change what a job computes (where it logs or runs, whether it may resume)
NON_SEMANTIC = ("logger", "launcher", "hydra", "output_root", "cache_dir", "resume")


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def job_key(cfg: DictConfig) -> str:
    """Identity of a job: the hash of its study and of everything that determines its result."""
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
    opts.update(shortcut=shortcut, seed=cfg.seed, epochs=cfg.epochs,  # validated later by config.check
                structure=("plain" if not shortcut else cfg.model.get("structure")),
                depth=cfg.model.get("depth"),
                bn_retrain=cfg.bn_retrain, study=cfg.study)
    if not C.is_real_model(cfg) and "t" in cfg.sign:
        opts["sign_t"] = cfg.sign.t  # STE threshold / ApproxSign's cancelling mask (binarydensenet sweep)
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
    import wandb

    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.study, job_type=stage,
                  name=f"{cfg.study}-{key[:8]}-{stage}", id=f"{key[:12]}-{stage}", resume="allow",
                  save_dir=str(run_dir), config={**wandb_config, "stage": stage}, reinit="finish_previous")
    if os.environ.get("WANDB_SWEEP_ID") and stage in ("binary", "real") and os.environ.get("WANDB_RUN_ID"):
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
    record: Record | None  # None in DDP helper ranks (rank > 0): they train but write nothing
    data: Any
    wandb_config: dict
    resuming: bool = False


def global_rank() -> int:
    """This process's rank in a multi-process (DDP) job, from the launcher's environment; 0 otherwise."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _checkpoint_callback(dirpath: Path):
    """Save ``last.ckpt`` at the end of every training epoch (after its validation and after the module's own
    epoch-end hook, as a Lightning ``Checkpoint`` callback runs last). With :func:`_checkpoint_io` the write is
    atomic and happens in a background thread on a copy of the state."""
    from pytorch_lightning.callbacks import Checkpoint

    class LastCheckpoint(Checkpoint):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            Path(dirpath).mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(Path(dirpath) / "last.ckpt"))

    return LastCheckpoint()


def _checkpoint_io():
    """Lightning's AsyncCheckpointIO (clones the tensors, then writes in a thread, so training does not wait for
    the disk) around a writer that saves to ``<path>.tmp`` and renames: a job killed while saving keeps the
    previous complete checkpoint, never a torn one."""
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    class AtomicTorchCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            tmp = f"{path}.tmp"
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return AsyncCheckpointIO(AtomicTorchCheckpointIO())


def resumable_checkpoint(job: Job, stage: str) -> str | None:
    """The stage's ``last.ckpt`` when this job resumes an interrupted stage; a corrupt one is a one-line error."""
    path = job.run_dir / "checkpoints" / stage / "last.ckpt"
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as e:
        raise C.ConfigError(f"checkpoint {path} is corrupt ({type(e).__name__}); delete it to restart stage "
                            f"{stage!r}, or run with resume=false") from None
    return str(path)


def train_stage(job: Job, stage: str, model: torch.nn.Module, epochs: int) -> dict:
    """Fit ``model`` for ``epochs`` (continuing from the stage's last checkpoint if the job was interrupted) and
    test it; returns the stage's metrics (also written to the record)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor

    from onebit.module import Classifier

    cfg = job.cfg
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    decays = {role: opt_cfg.pop(key) for role, key in
              (("binary", "binary_weight_decay"), ("real", "weight_decay"), ("bn", "bn_weight_decay"))}
    clip = opt_cfg.pop("latent_weight_clip")
    module = Classifier(model, instantiate(opt_cfg), instantiate(cfg.scheduler), epochs=epochs, decays=decays,
                        num_classes=job.data.num_classes, label_smoothing=cfg.label_smoothing,
                        latent_weight_clip=clip if stage != "pretrain" else None)
    ckpt_path = resumable_checkpoint(job, stage) if job.resuming else None
    rank0 = job.record is not None
    if rank0:
        job.record.update_stage(stage, status="running", epochs=epochs, resumed_from=ckpt_path)
    logger = make_logger(cfg, stage, job.run_dir, job.key, job.wandb_config) if rank0 else None
    if logger is not None and type(logger).__name__ == "WandbLogger":
        job.record.data["wandb"][stage] = {"id": logger.experiment.id, "mode": logger.experiment.settings.mode,
                                           "project": cfg.logger.project}
    callbacks = [_checkpoint_callback(job.run_dir / "checkpoints" / stage)]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer: pl.Trainer = instantiate(cfg.trainer, max_epochs=epochs, logger=logger if logger else False,
                                      callbacks=callbacks, default_root_dir=str(job.run_dir),
                                      plugins=[_checkpoint_io()])
    failed = True
    try:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=job.data, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - t0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        t1 = time.perf_counter()
        trainer.test(module, datamodule=job.data, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["val/top1_best"] = module.best_val_top1
        if rank0 and module.first_step_time and "first_step" not in job.record.data["timings"]:
            job.record.data["timings"]["first_step"] = module.first_step_time
        result = {"status": "finished", "metrics": metrics, "seconds": round(time.perf_counter() - t0, 3),
                  "fit_seconds": round(fit_seconds, 3), "test_seconds": round(time.perf_counter() - t1, 3),
                  "epochs": epochs, "history": module.history}
        if logger is not None and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update({"best/val_top1": module.best_val_top1})
        failed = False
    finally:
        finish_logger(logger, failed)
        if failed and rank0:
            job.record.update_stage(stage, status="failed")
    if rank0:
        job.record.update_stage(stage, **result)
    return result


def make_model(cfg: DictConfig, data, twin: bool = False) -> torch.nn.Module:
    """The configured model for ``data``: the binary net, its real-valued twin (``twin=True``: the pretraining
    activation where the Sign is, real weights), or the model itself when it is real-valued."""
    factory = instantiate(cfg.model, _partial_=True)
    common = dict(in_channels=data.in_channels, num_classes=data.num_classes)
    if "width" in cfg.model and cfg.model.width is None:
        common["width"] = getattr(data, "default_width", 64)
    if C.is_real_model(cfg):
        return factory(**common)
    if twin:
        return factory(sign=instantiate(cfg.pretrain.activation), weight=None, **common)
    return factory(sign=instantiate(cfg.sign), weight=instantiate(cfg.weight), **common)


def build_models(job: Job):
    """(twin, binary) for a binary model, (None, model) for a real-valued model or ``pretrain=none``. Everything
    is built before any training so that an invalid model option fails fast."""
    cfg = job.cfg
    has_twin = not C.is_real_model(cfg) and cfg.pretrain.name != "none"
    return (make_model(cfg, job.data, twin=True) if has_twin else None), make_model(cfg, job.data)


def load_checkpoint_weights(model: torch.nn.Module, path: Path | str) -> torch.nn.Module:
    """Load the model weights of a Lightning checkpoint (keys ``model.*`` of the Classifier) strictly."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")},
                          strict=True)
    return model


def transfer(twin_state: dict, binary: torch.nn.Module) -> dict:
    """Load the twin's weights into the binary model with strict=True and return the audit for the record."""
    result = binary.load_state_dict(twin_state, strict=True)
    n_params = sum(v.numel() for v in twin_state.values())
    digest = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes()
                                     for v in twin_state.values())).hexdigest()[:16]
    return {"strict": True, "tensors": len(twin_state), "elements": n_params, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "sha256": digest}


def twin_state(job: Job, twin: torch.nn.Module) -> dict:
    """The pretrained twin's weights: from the cache (trained once per content hash, under a file lock), or from
    this job's own finished pretrain stage when it resumes."""
    cfg = job.cfg
    cache = PretrainCache(Path(cfg.cache_dir))
    key = pretrain_key(cfg)
    if job.record is None:  # DDP helper rank: no lock (rank 0 holds it); train alongside rank 0 or read its entry
        entry = cache.load(key)
        if entry is None:
            train_stage(job, "pretrain", twin, int(cfg.pretrain.epochs))
            return twin.state_dict()
        return entry["state_dict"]
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
    if job.record.stage("pretrain").get("cache", {}).get("hit") is False:  # resumed job that trained it itself
        return entry["state_dict"]
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


def _stage_done(job: Job, stage: str) -> bool:
    return job.record is not None and job.record.data["stages"].get(stage, {}).get("status") == "finished"


def _load_stage_weights(job: Job, stage: str, model: torch.nn.Module) -> None:
    """Weights of a finished stage of a resumed job, from its last checkpoint."""
    path = resumable_checkpoint(job, stage)
    if path is None:
        raise C.ConfigError(f"cannot resume {job.run_dir}: stage {stage!r} is finished but its checkpoint is "
                            "missing; run with resume=false")
    load_checkpoint_weights(model, path)


def run_stages(job: Job, twin, binary) -> None:
    """pretrain -> binary -> bn_retrain (or the single ``real`` stage), skipping the stages a resumed job already
    finished."""
    cfg = job.cfg
    if C.is_real_model(cfg):
        if not _stage_done(job, "real"):
            train_stage(job, "real", binary, int(cfg.epochs))
        return
    if not _stage_done(job, "binary"):
        if twin is not None and resumable_checkpoint(job, "binary") is None:
            state = twin_state(job, twin)
            audit = transfer(state, binary)
            if job.record is not None:
                job.record.update_stage("binary", transfer=audit)
        train_stage(job, "binary", binary, int(cfg.epochs))
    elif cfg.bn_retrain and not _stage_done(job, "bn_retrain"):
        _load_stage_weights(job, "binary", binary)
    if cfg.bn_retrain and not _stage_done(job, "bn_retrain"):
        run_bn_retrain(job, binary)


class JobIndex:
    """``<output_root>/index/<job_key>.json``: where each job's record lives. Re-running the same job (same study
    and config) finds it there: a finished job is skipped, an interrupted or failed one resumes in its own run
    directory. The lock ``<job_key>.lock`` is held while the job runs (released by the OS if it is killed), so a
    second copy of a running job is refused instead of writing into the same directory."""

    def __init__(self, output_root: Path):
        self.root = Path(output_root) / "index"
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self, key: str):
        from filelock import FileLock

        return FileLock(str(self.root / f"{key}.lock"), timeout=0)

    def get(self, key: str) -> dict | None:
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
            return read_record(Path(entry["run_dir"]) / RECORD_NAME)
        except (OSError, ValueError, KeyError):
            return None

    def set(self, key: str, run_dir: Path) -> None:
        atomic_write_json(self.root / f"{key}.json", {"run_dir": str(run_dir)})


def _build(job: Job):
    """Data and models, before any training: every bad option or value fails here, as one ConfigError line."""
    cfg = job.cfg
    try:
        data = instantiate(cfg.data)
        data.prepare_data()
        data.setup("fit")
        job.data = data
        return build_models(job)
    except (ValueError, TypeError, FileNotFoundError, InstantiationException) as e:
        cause = e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        raise C.ConfigError(str(cause).strip().splitlines()[0]) from e


def run(cfg: DictConfig, run_dir: Path, explicit_groups: set[str] = frozenset()) -> dict:
    """Run one job; returns its record's data. Raises on failure after recording it.

    With ``resume=true`` (default) a job whose study and config match a finished record is skipped (its record is
    returned), and an interrupted or failed one continues in its original run directory from its last checkpoints
    (same stage, same W&B run ids, optimizer and scheduler state restored). ``run_dir`` (Hydra's job directory)
    always gets ``job.json``, pointing at the record that holds the job's results.
    """
    import pytorch_lightning as pl
    from filelock import Timeout

    from onebit.summary import summarize

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    key = job_key(cfg)
    if global_rank() > 0:  # a DDP helper process: same stages, no record / index / logger / cache writes
        job = Job(cfg, run_dir, key, None, None, {}, resuming=bool(cfg.resume))
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        run_stages(job, *_build(job))
        return {}
    index = JobIndex(Path(cfg.output_root))
    lock = index.lock(key)
    try:
        lock.acquire()
    except Timeout:
        previous = index.get(key)
        raise C.ConfigError(f"this job is already running (in {previous['run_dir'] if previous else '?'}); "
                            "wait for it, or change study/seed to run another copy") from None
    try:
        previous = index.get(key) if cfg.resume else None
        if previous is not None and previous["status"] == "finished":
            atomic_write_json(Path(run_dir) / "job.json", {"job_key": key, "record": previous["run_dir"],
                                                           "action": "skipped (finished before)"})
            return {**previous, "skipped": True}
        resuming = previous is not None
        if resuming:
            atomic_write_json(Path(run_dir) / "job.json", {"job_key": key, "record": previous["run_dir"],
                                                           "action": "resumed"})
            run_dir = Path(previous["run_dir"])
            record = Record(run_dir / RECORD_NAME, previous)
            record.data.update(status="running", error=None)
            record.data["attempts"] = record.data.get("attempts", 1) + 1
            record.save()
        else:
            record = Record.start(run_dir, job_key=key, study=cfg.study, options=flat_options(cfg),
                                  config=OmegaConf.to_container(cfg, resolve=True))
        index.set(key, run_dir)
        return _run_job(cfg, run_dir, key, record, resuming, explicit_groups, summarize, pl)
    finally:
        lock.release()


def _run_job(cfg, run_dir, key, record, resuming, explicit_groups, summarize, pl) -> dict:
    try:
        C.check(cfg, explicit_groups)
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        job = Job(cfg, Path(run_dir), key, record, None, {}, resuming=resuming)
        twin, binary = _build(job)
        eff = summarize(binary, tuple(job.data.input_size)).as_dict()
        record.data["efficiency"] = eff
        record.save()
        job.wandb_config = {**record.data["options"], "job_key": key,
                            **{f"efficiency/{k}": v for k, v in eff.items()}, "config": record.data["config"]}
        run_stages(job, twin, binary)
    except BaseException as e:
        record.data["traceback"] = traceback.format_exc(limit=20)
        record.finish("failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
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
        records, skipped = [], 0
        for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            pointer = job_dir / "job.json"
            try:
                target = Path(json.loads(pointer.read_text())["record"]) if pointer.exists() else job_dir
                skipped += pointer.exists() and "skipped" in json.loads(pointer.read_text()).get("action", "")
                records.append(read_record(target / RECORD_NAME))
            except (OSError, ValueError, KeyError) as e:
                records.append({"status": "failed", "run_dir": str(job_dir), "error": f"no record: {e}"})
        failed = [r for r in records if r["status"] != "finished"]
        note = f" ({skipped} skipped: finished before)" if skipped else ""
        print(f"onebit sweep: {len(records) - len(failed)} finished{note}, {len(failed)} failed  ({sweep_dir})")
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
    model = make_model(cfg, instantiate(cfg.data), twin=stage == "pretrain")
    return load_checkpoint_weights(model, Path(record["run_dir"]) / "checkpoints" / stage / "last.ckpt").eval()
