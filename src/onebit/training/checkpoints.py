"""Stage checkpoints, written by Lightning's ``ModelCheckpoint`` in ``<run dir>/checkpoints/<stage>/``:

- ``last.ckpt``: after every training epoch (after its validation and the module's own epoch-end hook, so the
  epoch's history is complete): what an interrupted stage resumes from, and a finished stage's final weights;
- ``best.ckpt``: the weights of the epoch with the best ``val/top1`` (mode max, the first of equal ones; its
  ``epoch`` in the file), overwritten in place; no optimizer state (nothing resumes from it). Its tracker's
  state (best score and path) is in every ``last.ckpt``, so the best survives a resume. A stage that never
  validates (``trainer.limit_val_batches=0``) has none.

Both are written atomically and off the training thread (:func:`atomic_async_io`), and hold the module's
hyperparameters: ``onebit.training.module.Classifier.load_from_checkpoint(path)`` needs no arguments."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from onebit.core.errors import ConfigError
from onebit.core.killpoints import kill_point
from onebit.records.layout import BEST, LAST, MONITOR, stage_checkpoint, stage_dir
from onebit.records.recipe import recorded_stage
from onebit.training.build import stage_model
from onebit.training.cache import PretrainCache
from onebit.training.module import Classifier


def checkpoint_callbacks(run_dir: Path | str, stage: str) -> list:
    """``[best, last]``: two ``ModelCheckpoint`` callbacks (best first, so that ``last.ckpt`` holds the best
    tracker's state of the same epoch). ``last`` is a top-1 checkpoint without a monitor (Lightning 2.6 writes
    ``save_last`` only when a top-k checkpoint is written at the same step); after it, the kill point
    ``epoch_end:<stage>:<epoch>`` (``onebit.core.killpoints``)."""
    dirpath = os.path.realpath(stage_dir(run_dir, stage))  # as ModelCheckpoint resolves it
    # a resumed stage's folder holds its checkpoints by design
    warnings.filterwarnings("ignore", message=rf"Checkpoint directory {re.escape(dirpath)} exists and is not empty")

    class BestCheckpoint(ModelCheckpoint):
        __qualname__ = "BestCheckpoint"  # its state's key in a checkpoint (``Callback.state_key``)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if self.monitor in trainer.callback_metrics:  # else no validation yet (or ever): nothing to rank
                super().on_train_epoch_end(trainer, pl_module)

    class LastCheckpoint(ModelCheckpoint):
        __qualname__ = "LastCheckpoint"

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            kill_point(f"epoch_end:{stage}:{trainer.current_epoch}")

    common = {"dirpath": dirpath, "save_top_k": 1, "save_on_train_epoch_end": True, "enable_version_counter": False,
              "auto_insert_metric_name": False}
    return [BestCheckpoint(filename=BEST.removesuffix(".ckpt"), monitor=MONITOR, mode="max", save_weights_only=True,
                           **common),
            LastCheckpoint(filename=LAST.removesuffix(".ckpt"), **common)]


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


def last_checkpoint(run_dir: Path | str, stage: str) -> Path | None:
    return stage_checkpoint(run_dir, stage, "last")


def model_weights(ckpt: dict | Path | str) -> dict:
    """The model's state dict (keys without ``model.``) of a checkpoint of the Classifier, or of its path."""
    state = (ckpt if isinstance(ckpt, dict) else read_checkpoint(ckpt))["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def find_weights(record, name: str, weights: str = "last",
                 hint: str = "delete it to restart its stage, or run with resume=false") -> tuple[dict, dict] | None:
    """The model weights of a finished stage of a recorded run (``last``: its final weights, ``best``: its best
    ``val/top1`` epoch's) and where they came from: this run's checkpoint, ``{"source": "checkpoint", "path",
    "epoch"}``, or for ``last`` of a cached stage that has none here (a cache hit), the pretrain-cache entry,
    ``{"source": "cache", "path", "epoch": None, "trained_by"}``. ``None``: neither exists. A corrupt checkpoint
    is one ConfigError line ending with ``hint``."""
    path = stage_checkpoint(record.run_dir, name, weights)
    if path is not None:
        ckpt = read_checkpoint(path, hint)
        return model_weights(ckpt), {"source": "checkpoint", "path": str(path), "epoch": ckpt.get("epoch")}
    cache, cache_dir = record.stages[name].cache or {}, record.config.get("cache_dir")
    entry = PretrainCache(cache_dir).load(cache["key"]) if weights == "last" and cache and cache_dir else None
    if entry is None:
        return None
    return entry["state_dict"], {"source": "cache", "path": str(PretrainCache(cache_dir).root / cache["key"]),
                                 "epoch": None, "trained_by": cache.get("trained_by")}


def stage_weights(record, name: str) -> dict:
    """The final weights of a finished stage of a recorded run (:func:`find_weights`)."""
    found = find_weights(record, name)
    if found is None:
        raise ConfigError(f"{record.run_dir}: stage {name!r} is finished but its weights are gone (no checkpoint, "
                          "no cache entry); run it again with resume=false")
    return found[0]


def stage_module(record, name: str, weights: str, data):
    """The ``Classifier`` of a finished stage of a recorded run, rebuilt from the run's config for ``data``, with
    the stage's ``weights`` (``last`` or ``best``, :func:`find_weights`), in eval mode, and where they came from.
    Anything missing is one ConfigError line that says what is available instead."""
    other = "best" if weights == "last" else "last"
    found = find_weights(record, name, weights, hint=f"evaluate weights={other} instead, or train the stage again")
    if found is None:
        raise ConfigError(_missing(record, name, weights, other))
    module = Classifier.for_stage(record.config, recorded_stage(record, name), data)
    module.model.load_state_dict(found[0], strict=True)
    return module.eval(), found[1]


def _missing(record, name: str, weights: str, other: str) -> str:
    """Why a finished stage has no ``weights`` here, and what is available instead."""
    st, run_dir = record.stages[name], record.run_dir
    where, cache = stage_dir(run_dir, name) / f"{weights}.ckpt", st.cache or {}
    if cache.get("hit"):
        return (f"weights={weights}: stage {name!r} reused a cached twin trained by "
                f"{cache.get('trained_by') or 'another run'}, so this run has no {weights}.ckpt of it; "
                + ("use weights=last (the cache entry), or " if find_weights(record, name) else "")
                + f"evaluate it in the run that trained it (run={cache.get('trained_by')} stage={name})")
    if (record.config.get("trainer") or {}).get("fast_dev_run"):
        return f"weights={weights}: {where} does not exist: trainer.fast_dev_run writes no checkpoints"
    if weights == "best" and not any(MONITOR in h for h in st.history):
        return (f"weights=best: stage {name!r} never validated (no {MONITOR} in its history, e.g. "
                "trainer.limit_val_batches=0), so it has no best.ckpt; use weights=last")
    available = f"; weights={other} exists" if stage_checkpoint(run_dir, name, other) else ""
    return f"weights={weights}: {where} does not exist (deleted?){available}"


def model_from_record(record, stage: str | None = None) -> torch.nn.Module:
    """Rebuild the model of one stage of a recorded run (default: its final stage) with that stage's final
    weights (:func:`stage_weights`), in eval mode (for analysis, plots and export)."""
    name = stage or record.final_stage.name
    cfg = OmegaConf.create(record.config)
    model = stage_model(cfg, instantiate(cfg.data), recorded_stage(record, name))
    model.load_state_dict(stage_weights(record, name), strict=True)
    return model.eval()
