"""Training recipes as data: a recipe is a list of :class:`Stage` specs, and :func:`run_recipe` is the one loop
that runs any of them, resuming wherever a previous attempt stopped.

A config's recipe (:func:`stages_for`) is ``[pretrain] + recipe.steps + [bn_retrain]``:

- ``pretrain`` (Bi-Real section 4.1; when ``pretrain`` is not none): the real-valued twin (same structure,
  ``pretrain.activation`` where the Sign is, real weights), served by the pretrain cache;
- the steps of ``conf/recipe/<name>.yaml``, each initialised from the stage before it by a strict, audited
  state-dict transfer (the first from the twin, or freshly initialised without pretraining):
  ``one_step`` (Bi-Real ECCV 2018) is one ``binary`` stage; ``two_step`` (Bi-Real IJCV 2020's two-step scheme,
  as ReActNet's code ships it) is ``binary_activations`` (binary activations, real weights) -> ``binary``;
- ``bn_retrain`` (``bn_retrain=true``): weights fixed to +-1 without the magnitude-aware scale, every conv and
  the FC frozen, BatchNorm retrained for one epoch, from the last step.

A real-valued model (``model=resnet18``) has one stage, ``real``. A new training scheme is a new YAML file under
``conf/recipe/``: the loop does not change.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from onebit import config as C
from onebit.build import MODEL_KINDS, make_model, transfer
from onebit.cache import PretrainCache
from onebit.checkpoints import (atomic_async_io, last_checkpoint, last_checkpoint_callback, read_checkpoint,
                                stage_weights)
from onebit.identity import pretrain_key
from onebit.killpoints import kill_point
from onebit.loggers import finish_logger, make_logger, wandb_info
from onebit.records import StageRecord

log = logging.getLogger("onebit")
TRAINABLE = ("all", "batchnorm")


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Args:
        name: the stage's name in the record, checkpoints and W&B (``job_type``).
        model: which model it trains (``onebit.build.MODEL_KINDS``: twin, binary_activations, binary, real).
        epochs: how long.
        init: the earlier stage whose final weights initialise this one (strict transfer), or ``None`` for a
            fresh initialisation.
        cached: trained once per ``pretrain_key`` and shared through the pretrain cache.
        trainable: ``all`` parameters, or ``batchnorm`` only (everything else frozen).
        fixed_weights: binary weights fixed to +-1 without a scale (Bi-Real 4.1's BN retraining).
        optimizer: ``(key, value)`` pairs that replace the optimizer config's values in this stage only
            (e.g. ReActNet's step-1 weight decay).
    """

    name: str
    model: str
    epochs: int
    init: str | None = None
    cached: bool = False
    trainable: str = "all"
    fixed_weights: bool = False
    optimizer: tuple = ()

    def record(self) -> StageRecord:
        return StageRecord(name=self.name, model=self.model, epochs=self.epochs,
                           init="cache" if self.cached else self.init)


STEP_KEYS = ("name", "model", "epochs", "optimizer")
DEFAULT_RECIPE = {"name": "one_step", "steps": [{"name": "binary", "model": "binary"}]}  # configs before recipes


def stages_for(cfg: DictConfig) -> tuple[Stage, ...]:
    """The recipe of a config (see the module docstring), validated."""
    if C.is_real_model(cfg):
        return validate((Stage("real", "real", int(cfg.epochs)),))
    stages: list[Stage] = []
    if cfg.pretrain.name != "none":
        stages.append(Stage("pretrain", "twin", int(cfg.pretrain.epochs), cached=True))
    recipe = cfg.get("recipe") or DEFAULT_RECIPE
    steps = recipe.get("steps")
    name = recipe.get("name", "?")
    if not steps or not OmegaConf.is_list(steps) and not isinstance(steps, list):
        raise ValueError(f"recipe={name}: recipe.steps must be a non-empty list of steps ({', '.join(STEP_KEYS)})")
    for i, step in enumerate(steps):
        unknown = sorted(set(step) - set(STEP_KEYS))
        if unknown:
            raise ValueError(f"recipe={name}: step {i} has unknown key {unknown[0]!r}; valid: {', '.join(STEP_KEYS)}")
        if "name" not in step or "model" not in step:
            raise ValueError(f"recipe={name}: step {i} needs a name and a model (valid models: "
                             f"{', '.join(k for k in MODEL_KINDS if k not in ('twin', 'real'))})")
        if step["model"] in ("twin", "real"):
            raise ValueError(f"recipe={name}: step {step['name']!r} has model={step['model']!r}; a step trains a "
                             f"binary model: {', '.join(k for k in MODEL_KINDS if k not in ('twin', 'real'))}")
        epochs = step.get("epochs", cfg.epochs)
        if not isinstance(epochs, int) or isinstance(epochs, bool):
            raise ValueError(f"recipe={name}: step {step['name']!r} has epochs={epochs!r}: must be a positive integer")
        overrides = step.get("optimizer") or {}
        for key in overrides:
            if key not in cfg.optimizer:
                raise ValueError(f"recipe={name}: step {step['name']!r} sets optimizer.{key}, which "
                                 f"optimizer={cfg.optimizer._target_.rsplit('.', 1)[-1]} does not have; valid: "
                                 f"{', '.join(k for k in cfg.optimizer if not k.startswith('_'))}")
        stages.append(Stage(str(step["name"]), str(step["model"]), epochs,
                            init=stages[-1].name if stages else None,
                            optimizer=tuple(sorted((str(k), v) for k, v in overrides.items()))))
    if cfg.bn_retrain:
        if stages[-1].model != "binary":
            raise ValueError(f"bn_retrain=true needs a recipe that ends with a binary model; recipe={name} ends "
                             f"with {stages[-1].name!r} ({stages[-1].model})")
        stages.append(Stage("bn_retrain", "binary", 1, init=stages[-1].name, trainable="batchnorm",
                            fixed_weights=True))
    return validate(tuple(stages))


def validate(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """Names unique, each ``init`` an earlier stage, known model kinds, positive epochs."""
    seen: dict[str, Stage] = {}
    for s in stages:
        if s.name in seen:
            raise ValueError(f"recipe has two stages named {s.name!r}")
        if s.model not in MODEL_KINDS:
            raise ValueError(f"stage {s.name!r}: unknown model {s.model!r}; valid: {', '.join(MODEL_KINDS)}")
        if s.init is not None and s.init not in seen:
            raise ValueError(f"stage {s.name!r} is initialised from {s.init!r}, which is not an earlier stage "
                             f"(earlier: {', '.join(seen) or 'none'})")
        if s.trainable not in TRAINABLE:
            raise ValueError(f"stage {s.name!r}: trainable={s.trainable!r}; valid: {', '.join(TRAINABLE)}")
        if s.epochs < 1:
            raise ValueError(f"stage {s.name!r}: epochs={s.epochs} must be >= 1")
        seen[s.name] = s
    return stages


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def run_recipe(job, record, data, stages: tuple[Stage, ...]) -> None:
    """Run every stage in order: a finished stage is skipped (its weights are loaded only if a later stage
    needs them); an interrupted one continues from its last checkpoint; a new one is initialised, trained,
    tested and recorded. In DDP helper ranks (``job.rank_zero`` False) ``record`` is rank zero's, read only:
    they skip what rank zero skips, train alongside it and write nothing."""
    weights: dict[str, dict] = {}  # final weights of the stages run in this process

    def final_weights(name: str) -> dict:
        if name not in weights:
            weights[name] = stage_weights(record, name)
        return weights[name]

    by_name = {s.name: s for s in stages}
    for stage in stages:
        if record.stage(stage.name).finished:
            continue
        seed_everything(int(job.cfg.seed))  # every stage starts from the same RNG state, resumed or not
        model = make_model(job.cfg, data, stage.model)
        if stage.cached:
            state = _cached_stage(job, record, data, stage, model)
        else:
            resume_from = last_checkpoint(job.run_dir, stage.name) if job.resuming else None
            if stage.init is not None and resume_from is None:
                record.update_stage(stage.name, transfer=transfer(final_weights(by_name[stage.init].name), model))
            _prepare(stage, model)
            train_stage(job, record, data, stage, model, resume_from)
            state = model.state_dict()
        weights[stage.name] = state
        kill_point(f"stage_end:{stage.name}")


def seed_everything(seed: int) -> None:
    import pytorch_lightning as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def _cached_stage(job, record, data, stage: Stage, model) -> dict:
    """A cached stage: the entry of its key when one exists, else train it (under the key's lock, so concurrent
    jobs train it once) and store it. An entry this run stored itself (killed before recording it) counts as
    its own training, so the record equals an uninterrupted run's."""
    cache, key = PretrainCache(job.cfg.cache_dir), pretrain_key(job.cfg)
    if not job.rank_zero:  # DDP helper: no lock (rank zero holds it); train alongside rank zero or read its entry
        entry = cache.load(key)
        if entry is None:
            train_stage(job, record, data, stage, model, None)
            return model.state_dict()
        return entry["state_dict"]
    t0 = time.perf_counter()
    with cache.lock(key):
        entry = cache.load(key)
        if entry is None:
            resume_from = last_checkpoint(job.run_dir, stage.name) if job.resuming else None
            result = train_stage(job, record, data, stage, model, resume_from, finish=False)
            cache.save(key, model.state_dict(), {"metrics": result.metrics, "history": result.history,
                                                 "seconds": result.seconds, "trained_by": record.run_dir,
                                                 "created": time.time()})
            record.update_stage(stage.name, status="finished", cache={"key": key, "hit": False})
            return model.state_dict()
    own = entry.get("trained_by") == record.run_dir
    record.update_stage(stage.name, status="finished", metrics=entry["metrics"], history=entry.get("history", []),
                        seconds=entry["seconds"],
                        cache={"key": key, "hit": not own, "trained_by": entry.get("trained_by"),
                               **({} if own else {"wait_seconds": round(time.perf_counter() - t0, 3)})})
    return entry["state_dict"]


def _prepare(stage: Stage, model: torch.nn.Module) -> None:
    """Component state and frozen parameters of a stage (Bi-Real 4.1: weights fixed to +-1, BN only)."""
    if stage.fixed_weights:
        for m in model.modules():
            if hasattr(m, "fixed"):
                m.fixed = True
    if stage.trainable == "batchnorm":
        for m in model.modules():
            is_bn = isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False):
                p.requires_grad_(is_bn)


def stage_metrics(history: list[dict], test: dict) -> dict:
    """A stage's final metrics from its per-epoch history (so a stage resumed after its last epoch has them
    too): the last epoch's ``val/*`` and ``train/*``, the best ``val/top1`` over epochs, and the test metrics."""
    last = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "seconds")}
    vals = [h["val/top1"] for h in history if "val/top1" in h]
    return {**last, **({"val/top1_best": max(vals)} if vals else {}), **test}


def train_stage(job, record, data, stage: Stage, model, resume_from: Path | None, finish: bool = True):
    """Fit ``model`` for the stage's epochs (continuing from ``resume_from``), test it, and record the result
    (status ``finished`` unless ``finish=False``: the caller records completion). Returns the StageRecord."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, LearningRateMonitor

    from onebit.module import Classifier

    cfg = job.cfg
    opt_cfg = {**OmegaConf.to_container(cfg.optimizer, resolve=True), **dict(stage.optimizer)}
    decays = {role: opt_cfg.pop(key) for role, key in
              (("binary", "binary_weight_decay"), ("real", "weight_decay"), ("bn", "bn_weight_decay"))}
    clip = opt_cfg.pop("latent_weight_clip")
    module = Classifier(model, instantiate(opt_cfg), instantiate(cfg.scheduler), epochs=stage.epochs, decays=decays,
                        num_classes=data.num_classes, label_smoothing=cfg.label_smoothing,
                        latent_weight_clip=clip if stage.model == "binary" else None)
    if resume_from is not None:
        read_checkpoint(resume_from)  # a torn checkpoint is one line, not a Lightning traceback
    logger = None
    if job.rank_zero:
        record.update_stage(stage.name, status="running", resumed_from=str(resume_from) if resume_from else None)
        logger = make_logger(cfg, stage.name, record)
        if logger is not None:
            record.update_stage(stage.name, wandb=wandb_info(logger, cfg))

    class KillDuringTest(Callback):
        def on_test_batch_end(self, *args, **kwargs):
            kill_point(f"test:{stage.name}")

    callbacks = [last_checkpoint_callback(job.run_dir, stage.name), KillDuringTest()]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer: pl.Trainer = instantiate(cfg.trainer, max_epochs=stage.epochs, logger=logger if logger else False,
                                      callbacks=callbacks, default_root_dir=str(job.run_dir),
                                      plugins=[atomic_async_io()])
    failed = True
    try:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        fit_seconds = time.perf_counter() - t0
        kill_point(f"fit_end:{stage.name}")
        t1 = time.perf_counter()
        trainer.test(module, datamodule=data, verbose=False)
        test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if logger is not None and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update({"best/val_top1": module.best_val_top1})
        failed = False
    finally:
        finish_logger(logger, failed)
    result: dict[str, Any] = dict(metrics=stage_metrics(module.history, test), history=module.history,
                                  seconds=round(time.perf_counter() - t0, 3), fit_seconds=round(fit_seconds, 3),
                                  test_seconds=round(time.perf_counter() - t1, 3))
    if module.first_step_time and "first_step" not in record.timings:
        record.timings["first_step"] = module.first_step_time
    return record.update_stage(stage.name, **result, **({"status": "finished"} if finish else {}))
