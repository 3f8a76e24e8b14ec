"""The one loop that runs any recipe (``onebit.records.recipe``: a list of :class:`Stage` specs), resuming wherever a
previous attempt stopped: a finished stage is skipped, an interrupted one continues from its last checkpoint, a
cached one (the pretrained twin) comes from the pretrain cache, and every new one is initialised from the stage it
names, trained (a distilled stage with its teacher, ``onebit.training.teacher``), tested and recorded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.callbacks import Callback, LearningRateMonitor

from onebit.core import cluster
from onebit.core.killpoints import kill_point
from onebit.core.registry import PRETRAIN
from onebit.nn.speed import apply_speed_options
from onebit.records.identity import pretrain_key
from onebit.records.recipe import Stage
from onebit.tracking import progress
from onebit.tracking.callbacks import merge, shows_bar, user_callbacks
from onebit.tracking.diagnostics import BinaryDiagnostics
from onebit.tracking.loggers import finish_logger, make_logger
from onebit.tracking.replay import ReplayMissingEpochs
from onebit.tracking.wandb_run import log_stage_end, log_twin, wandb_info, wandb_run_path
from onebit.training.build import stage_model, transfer
from onebit.training.cache import PretrainCache
from onebit.training.checkpoints import (
    atomic_async_io,
    checkpoint_callbacks,
    last_checkpoint,
    read_checkpoint,
    stage_weights,
)
from onebit.training.module import Classifier
from onebit.training.teacher import load_teacher

log = logging.getLogger("onebit")


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
    say = job.rank_zero  # only rank zero writes lines (onebit.tracking.progress)
    if say:
        log.info("%s run %s: %s", f"resuming (attempt {record.attempts})" if job.resuming else "starting",
                 record.run_dir, " -> ".join(s.name for s in stages))
    for i, stage in enumerate(stages, 1):
        if record.stage(stage.name).finished:
            if say:
                progress.stage_skipped(i, len(stages), record.stage(stage.name))
            continue
        if say:
            progress.stage_started(i, len(stages), stage, record.stage(stage.name))
        seed_everything(int(job.cfg.seed))  # every stage starts from the same RNG state, resumed or not
        model = stage_model(job.cfg, data, stage)
        apply_speed_options(model, job.cfg.get("channels_last", False), job.cfg.get("compile", False))
        if stage.cached:
            state = _cached_stage(job, record, data, stage, model)
        else:
            resume_from = last_checkpoint(job.run_dir, stage.name) if job.resuming else None
            if stage.init is not None and resume_from is None:
                record.update_stage(stage.name, transfer=transfer(final_weights(by_name[stage.init].name), model))
            teacher = None
            if stage.distill:  # its teacher (conf/distill): the twin's final weights, or a finished real-valued run
                teacher, about = load_teacher(job.cfg, data, lambda: final_weights(PRETRAIN))
                record.update_stage(stage.name, teacher=about)
            train_stage(job, record, data, stage, model, resume_from, teacher=teacher)
            state = model.state_dict()
        if say:
            progress.stage_finished(i, len(stages), record.stage(stage.name))
        weights[stage.name] = state
        kill_point(f"stage_end:{stage.name}")


def seed_everything(seed: int) -> None:
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
            meta: dict = {}

            def store(result, logger):  # the twin's W&B run (lineage) in its meta; an artifact if asked for
                meta.update(metrics=result.metrics, history=result.history, seconds=result.seconds,
                            trained_by=record.run_dir, trained_by_run=wandb_run_path(result.wandb), created=time.time())
                log_twin(logger, job.cfg, key, cache.save(key, model.state_dict(), meta), meta)

            train_stage(job, record, data, stage, model, resume_from, finish=False, on_trained=store)
            record.update_stage(stage.name, status="finished", cache={"key": key, "hit": False, "trained_by":
                                meta["trained_by"], "trained_by_run": meta["trained_by_run"]})
            return model.state_dict()
    own = entry.get("trained_by") == record.run_dir
    took = round(time.perf_counter() - t0, 3)
    # a hit's seconds are this run's (waiting for the lock, loading); the twin's training time is what it saved
    record.update_stage(stage.name, status="finished", metrics=entry["metrics"], history=entry.get("history", []),
                        seconds=entry["seconds"] if own else took,
                        cache={"key": key, "hit": not own, "trained_by": entry.get("trained_by"),
                               "trained_by_run": entry.get("trained_by_run"),
                               **({} if own else {"wait_seconds": took, "saved_seconds": entry["seconds"]})})
    return entry["state_dict"]


def stage_metrics(history: list[dict], test: dict) -> dict:
    """A stage's final metrics from its per-epoch history (so a stage resumed after its last epoch has them
    too): the last epoch's ``val/*`` and ``train/*`` (and its ``diag/*`` diagnostics, onebit.tracking.diagnostics),
    the best ``val/top1`` over epochs, and the test metrics."""
    last = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "seconds")}
    vals = [h["val/top1"] for h in history if "val/top1" in h]
    return {**last, **({"val/top1_best": max(vals)} if vals else {}), **test}


def train_stage(job, record, data, stage: Stage, model, resume_from: Path | None, finish: bool = True,
                on_trained=None, teacher=None):
    """Fit ``model`` for the stage's epochs (continuing from ``resume_from``), test it, and record the result
    (status ``finished`` unless ``finish=False``: the caller records completion); then ``on_trained(stage record,
    logger)``, before the stage's logger run ends; ``teacher``: the frozen teacher of a distilled stage. Returns the
    StageRecord."""
    cfg = job.cfg
    module = Classifier.for_stage(cfg, stage, data, model, teacher)  # a teacher: distilled (its cost is in fit)
    if resume_from is not None:  # a torn checkpoint is one line, not a Lightning traceback
        done = read_checkpoint(resume_from)["epoch"] + 1  # the epochs it finished (saved at an epoch's end)
        if job.rank_zero:
            progress.stage_resumed(stage.name, done, stage.epochs, resume_from)
    logger = None
    if job.rank_zero:
        record.update_stage(stage.name, status="running", resumed_from=str(resume_from) if resume_from else None)
        logger = make_logger(cfg, stage.name, record)
        if logger is not None:
            record.update_stage(stage.name, wandb=wandb_info(logger))

    class KillDuringTest(Callback):
        def on_test_batch_end(self, *args, **kwargs):
            kill_point(f"test:{stage.name}")

    checkpoints = checkpoint_callbacks(job.run_dir, stage.name)
    callbacks = [*checkpoints, KillDuringTest()]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        callbacks.append(ReplayMissingEpochs())  # a resumed stage: the logger gets the epochs no attempt logged
    if cfg.get("diagnostics", True):  # diag/* per binary layer and epoch (onebit.tracking.diagnostics)
        callbacks.append(BinaryDiagnostics())
    user = user_callbacks(cfg)  # conf/callbacks: beside onebit's; a user's bar takes the bar's place
    bar = progress.want_bar(cfg.trainer.get("enable_progress_bar")) or shows_bar(user)  # null: a bar if interactive
    callbacks = merge([*callbacks, *progress.callbacks(stage.name, bar)], user)
    trainer: pl.Trainer = instantiate(cfg.trainer, max_epochs=stage.epochs, logger=logger if logger else False,
                                      callbacks=callbacks, enable_progress_bar=bar, default_root_dir=str(job.run_dir),
                                      plugins=[atomic_async_io(), *cluster.plugins()])
    failed = True
    try:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        fit_seconds = time.perf_counter() - t0
        kill_point(f"fit_end:{stage.name}")
        t1 = time.perf_counter()
        trainer.test(module, datamodule=data, verbose=False)
        test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        failed = False
    finally:
        if failed:
            finish_logger(logger, failed=True)
    result: dict[str, Any] = dict(metrics=stage_metrics(module.history, test), history=module.history,
                                  seconds=round(time.perf_counter() - t0, 3), fit_seconds=round(fit_seconds, 3),
                                  test_seconds=round(time.perf_counter() - t1, 3))
    if module.first_step_time and "first_step" not in record.timings:
        record.timings["first_step"] = module.first_step_time
    rec = record.update_stage(stage.name, **result, **({"status": "finished"} if finish else {}))
    failed = True
    try:  # before the logger's run ends: its summary and artifacts (logger.log_artifacts), the caller's (the twin's)
        log_stage_end(logger, cfg, job.run_dir, rec)
        if on_trained is not None:
            on_trained(rec, logger)
        failed = False
    finally:
        finish_logger(logger, failed)
    return rec
