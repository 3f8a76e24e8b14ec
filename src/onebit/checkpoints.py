"""Stage checkpoints: ``<run dir>/checkpoints/<stage>/last.ckpt``, written after every training epoch, atomically
and off the training thread; read back to resume a stage or to hand a finished stage's weights to the next."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from onebit.config import ConfigError

LAST = "last.ckpt"


def stage_dir(run_dir: Path | str, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def last_checkpoint_callback(run_dir: Path | str, stage: str):
    """Save ``last.ckpt`` at the end of every training epoch (after its validation and after the module's own
    epoch-end hook, as a Lightning ``Checkpoint`` callback runs last)."""
    from pytorch_lightning.callbacks import Checkpoint

    from onebit.killpoints import kill_point

    dirpath = stage_dir(run_dir, stage)

    class LastCheckpoint(Checkpoint):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            dirpath.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(dirpath / LAST))
            kill_point(f"epoch_end:{stage}:{trainer.current_epoch}")

    return LastCheckpoint()


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


def read_checkpoint(path: Path | str) -> dict:
    """A Lightning checkpoint as a dict; a torn or foreign file is one ConfigError line naming it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["state_dict"]
    except Exception as e:
        raise ConfigError(f"checkpoint {path} is corrupt ({type(e).__name__}); delete it to restart its stage, "
                          "or run with resume=false") from None
    return ckpt


def last_checkpoint(run_dir: Path | str, stage: str) -> Path | None:
    path = stage_dir(run_dir, stage) / LAST
    return path if path.exists() else None


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
