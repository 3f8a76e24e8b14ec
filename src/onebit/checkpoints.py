"""Stage checkpoints, written by Lightning's ``ModelCheckpoint`` in ``<run dir>/checkpoints/<stage>/``:

- ``last.ckpt``: after every training epoch (after its validation and the module's own epoch-end hook, so the
  epoch's history is complete): what an interrupted stage resumes from, and a finished stage's final weights;
- ``best.ckpt``: the epoch with the best ``val/top1`` (mode max, the first of equal ones), overwritten in place.
  Its tracker's state (best score and path) is in every checkpoint, so the best survives a resume. A stage
  that never validates (``trainer.limit_val_batches=0``) has none.

Both are written atomically and off the training thread (:func:`atomic_async_io`), and hold the module's
hyperparameters: ``onebit.module.Classifier.load_from_checkpoint(path)`` needs no arguments."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from onebit.config import ConfigError

LAST, BEST = "last.ckpt", "best.ckpt"
MONITOR = "val/top1"


def stage_dir(run_dir: Path | str, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def checkpoint_callbacks(run_dir: Path | str, stage: str) -> list:
    """``[best, last]``: two ``ModelCheckpoint`` callbacks (best first, so that ``last.ckpt`` holds the best
    tracker's state of the same epoch). ``last`` is a top-1 checkpoint without a monitor (Lightning 2.6 writes
    ``save_last`` only when a top-k checkpoint is written at the same step); after it, the kill point
    ``epoch_end:<stage>:<epoch>`` (``onebit.killpoints``)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from onebit.killpoints import kill_point

    dirpath = os.path.realpath(stage_dir(run_dir, stage))  # as ModelCheckpoint resolves it
    # a resumed stage's folder holds its checkpoints by design
    warnings.filterwarnings("ignore", message=rf"Checkpoint directory {re.escape(dirpath)} exists and is not empty")

    class BestCheckpoint(ModelCheckpoint):
        __qualname__ = "BestCheckpoint"  # its state's key in a checkpoint (``Callback.state_key``)
        best_epoch: int | None = None

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if self.monitor not in trainer.callback_metrics:  # no validation yet (or ever): nothing to rank
                return
            before, previous = self.best_model_score, self.best_epoch
            self.best_epoch = trainer.current_epoch  # as saved in best.ckpt's own state, if this epoch is the best
            super().on_train_epoch_end(trainer, pl_module)
            if self.best_model_score is before:  # not the best: no new best.ckpt
                self.best_epoch = previous

        def state_dict(self) -> dict:
            return {**super().state_dict(), "best_epoch": self.best_epoch}

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            self.best_epoch = state_dict.get("best_epoch")

    class LastCheckpoint(ModelCheckpoint):
        __qualname__ = "LastCheckpoint"

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            kill_point(f"epoch_end:{stage}:{trainer.current_epoch}")

    common = {"dirpath": dirpath, "save_top_k": 1, "save_on_train_epoch_end": True, "enable_version_counter": False,
              "auto_insert_metric_name": False}
    return [BestCheckpoint(filename=BEST.removesuffix(".ckpt"), monitor=MONITOR, mode="max", **common),
            LastCheckpoint(filename=LAST.removesuffix(".ckpt"), **common)]


def checkpoint_summary(run_dir: Path | str, callbacks: list) -> dict:
    """For the stage's record: where ``last`` and ``best`` are, relative to the run directory (``best``: ``None``
    without validation), the best epoch and its ``val/top1``."""
    best, last = callbacks[:2]

    def rel(path: str) -> str | None:
        return os.path.relpath(path, os.path.realpath(run_dir)) if path else None

    score = best.best_model_score
    return {"last": rel(last.best_model_path), "best": rel(best.best_model_path), "best_epoch": best.best_epoch,
            MONITOR: None if score is None else float(score)}


def atomic_async_io():
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


def read_checkpoint(path: Path | str, hint: str = "delete it to restart its stage, or run with resume=false") -> dict:
    """A Lightning checkpoint as a dict; a torn or foreign file is one ConfigError line naming it (and ``hint``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["state_dict"]
    except Exception as e:
        raise ConfigError(f"checkpoint {path} is corrupt ({type(e).__name__}); {hint}") from None
    return ckpt


def stage_checkpoint(run_dir: Path | str, stage: str, weights: str = "last") -> Path | None:
    """``<run dir>/checkpoints/<stage>/<weights>.ckpt`` (weights: ``last`` or ``best``) if it exists."""
    path = stage_dir(run_dir, stage) / {"last": LAST, "best": BEST}[weights]
    return path if path.exists() else None


def last_checkpoint(run_dir: Path | str, stage: str) -> Path | None:
    return stage_checkpoint(run_dir, stage, "last")


def model_weights(path: Path | str) -> dict:
    """The model's state dict from a checkpoint of the Classifier (keys ``model.*``)."""
    state = read_checkpoint(path)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def stage_weights(record, name: str) -> dict:
    """The final weights of a finished stage of a recorded run: its pretrain-cache entry (a cached stage may
    have no checkpoint in this run: a cache hit) or its last checkpoint."""
    from onebit.cache import PretrainCache

    st = record.stages[name]
    if st.cache and record.config.get("cache_dir"):
        entry = PretrainCache(record.config["cache_dir"]).load(st.cache["key"])
        if entry is not None:
            return entry["state_dict"]
    path = last_checkpoint(record.run_dir, name)
    if path is None:
        raise ConfigError(f"{record.run_dir}: stage {name!r} is finished but its weights are gone (no checkpoint, "
                          "no cache entry); run it again with resume=false")
    return model_weights(path)


def stage_module(record, name: str, weights: str, data):
    """The ``Classifier`` of a finished stage of a recorded run with its ``weights`` (``last`` or ``best``), in
    eval mode, and where they came from: ``{"source": "checkpoint" | "cache", "path", "epoch"}`` (and the cache
    entry's ``trained_by``).

    A checkpoint is loaded with ``Classifier.load_from_checkpoint`` (the model rebuilt from its hyperparameters);
    a cached stage that this run reused (a cache hit) has no checkpoint here: its ``last`` is the cache entry.
    Anything missing is one ConfigError line that says what is available instead."""
    from omegaconf import OmegaConf

    from onebit.cache import PretrainCache
    from onebit.module import Classifier
    from onebit.stages import stages_for

    def fresh():  # the stage's module rebuilt from the record's config, for weights that come without one
        spec = {s.name: s for s in stages_for(OmegaConf.create(record.config))}[name]
        return Classifier.for_stage(record.config, spec, data)

    st, run_dir = record.stages[name], record.run_dir
    path = stage_checkpoint(run_dir, name, weights)
    if path is not None:
        ckpt = read_checkpoint(path, hint=f"evaluate weights={'best' if weights == 'last' else 'last'} instead, "
                                          "or train the stage again")
        if "hyper_parameters" in ckpt:
            try:
                module = Classifier.load_from_checkpoint(path, map_location="cpu")
            except (TypeError, ValueError, KeyError, RuntimeError) as e:  # hyperparameters of another onebit
                raise ConfigError(f"checkpoint {path}: its module cannot be rebuilt from its hyperparameters "
                                  f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        else:  # written by an onebit before checkpoints held hyperparameters: rebuild the module from the record
            module = fresh()
            module.load_state_dict(ckpt["state_dict"])
        return module.eval(), {"source": "checkpoint", "path": str(path), "epoch": ckpt.get("epoch")}
    cache, cache_dir = st.cache or {}, record.config.get("cache_dir")
    entry = PretrainCache(cache_dir).load(cache["key"]) if cache.get("key") and cache_dir else None
    if weights == "last" and entry is not None:
        module = fresh()
        module.model.load_state_dict(entry["state_dict"], strict=True)
        return module.eval(), {"source": "cache", "path": str(PretrainCache(cache_dir).root / cache["key"]),
                               "epoch": None, "trained_by": cache.get("trained_by")}
    where = stage_dir(run_dir, name) / f"{weights}.ckpt"
    if cache.get("hit"):
        raise ConfigError(f"weights={weights}: stage {name!r} reused a cached twin trained by "
                          f"{cache.get('trained_by') or 'another run'}, so this run has no {weights}.ckpt of it; "
                          + ("use weights=last (the cache entry), or " if entry is not None else "")
                          + f"evaluate it in the run that trained it (run={cache.get('trained_by')} stage={name})")
    if (record.config.get("trainer") or {}).get("fast_dev_run"):
        raise ConfigError(f"weights={weights}: {where} does not exist: trainer.fast_dev_run writes no checkpoints")
    if weights == "best" and not any(MONITOR in h for h in st.history):
        raise ConfigError(f"weights=best: stage {name!r} never validated (no {MONITOR} in its history, e.g. "
                          "trainer.limit_val_batches=0), so it has no best.ckpt; use weights=last")
    other = "best" if weights == "last" else "last"
    available = f"; weights={other} exists" if stage_checkpoint(run_dir, name, other) else ""
    raise ConfigError(f"weights={weights}: {where} does not exist (deleted?){available}")
