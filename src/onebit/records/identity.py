"""What identifies a job, a pretrained twin and a table cell: one rule, derived from the whole resolved config.

- The **job identity** is the resolved config minus :data:`NOT_IN_IDENTITY` (keys that cannot change a result,
  each with its reason) and minus the Lightning Trainer arguments in :data:`TRAINER_NOT_IN_IDENTITY`. Every other
  key, including every Trainer argument not on that list, is in it: a smoke run
  (``+trainer.limit_train_batches=2``) is a different job from the full run, and so is the same config in another
  ``study``. Its hash is the :func:`job_key` of the job index (skip finished, resume interrupted).
- The **twin identity** (the pretrain-cache key) is the job identity minus :data:`LATER_STAGE_KEYS`, the keys
  that only stages after pretraining read: a sweep over ``sign`` shares one twin.
- A **cell** of a table is the job identity minus :data:`SEED_KEYS` and ``study``: runs in one cell are identical
  except for their seed, so their mean over seeds is meaningful. Two configs never share a cell.

A run is a **smoke run** when a Trainer setting cuts its training or evaluation short (:data:`SMOKE_TRAINER_KEYS`)
or its config says ``smoke: true`` (every ``debug=`` option, conf/debug/default.yaml); it is recorded as such and
tables leave it out by name.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from onebit.core.registry import GROUPS

# dotted config keys that cannot change what a job computes
NOT_IN_IDENTITY: dict[str, str] = {
    **{group: spec.not_in_identity for group, spec in GROUPS.items() if spec.not_in_identity},  # logger, launcher
    "hydra": "Hydra's own settings: output directories, launcher and sweeper parameters",
    "choices": "the name of the option chosen in each group; what an option sets is in the identity (renaming an "
               "option's file changes no result)",
    "sequential": "the sequential design over seeds of a hydra.sweeper.seeds=auto sweep (which seeds a sweep runs); a "
                  "job's result does not depend on it, so a job of an adaptive sweep is the job of a fixed design",
    "output_root": "where records and checkpoints are written",
    "cache_dir": "where the pretrain cache lives",
    "resume": "whether a re-run continues a previous attempt; the result is the same",
    "print_config": "whether the composed config is printed at start",
    "threads": "CPU threads per job: speed (and at most float summation order), like data.num_workers",
    "data.num_workers": "data-loader processes: the batches are the same",
    "channels_last": "memory layout of the model's tensors: speed (and at most float summation order), like threads",
    "compile": "torch.compile of the model: speed (and at most float summation order, fused kernels), like threads",
    "shortcut": "only an input of model.shortcut (${shortcut}); the model's resolved value is in the identity, "
                "and a contradiction (model=plain18 shortcut=true) is refused",
}

# Lightning Trainer arguments that cannot change a result; every other Trainer argument is in the identity
# (tests/test_identity.py enumerates the Trainer's signature against this list)
TRAINER_NOT_IN_IDENTITY: dict[str, str] = {
    "logger": "set by onebit per stage from the logger option",
    "callbacks": "set by onebit (checkpointing, learning-rate monitor)",
    "plugins": "set by onebit (atomic asynchronous checkpoint writing)",
    "default_root_dir": "an output path",
    "enable_checkpointing": "whether checkpoint files are written",
    "enable_progress_bar": "terminal display",
    "enable_model_summary": "terminal display",
    "log_every_n_steps": "how often metrics are sent to the logger",
    "profiler": "timing measurements",
    "detect_anomaly": "a debugging check on the backward pass; the numbers are the same",
    "inference_mode": "torch.inference_mode or no_grad during evaluation; the numbers are the same",
    "num_sanity_val_steps": "validation batches before training; they do not touch the model or the data order",
    "barebones": "turns off Lightning's logging and checkpoint features, not the computation",
    "enable_autolog_hparams": "what the logger receives",
    "model_registry": "where Lightning would upload a model",
    "max_epochs": "set by onebit per stage from epochs / pretrain.epochs, which are in the identity",
}

# keys read only by the stages after pretraining: not part of the pretrained twin's identity
LATER_STAGE_KEYS: dict[str, str] = {
    "sign": "the twin has the pretraining activation where the Sign is",
    "weight": "the twin has real-valued weights",
    "epochs": "the binary stage's length; the twin's is pretrain.epochs (resolved, so it is in the key)",
    "bn_retrain": "a stage after the binary one",
    "recipe": "the steps after pretraining (one_step, two_step)",
    "study": "a twin depends on its config, not on the study that asked for it: studies share it",
    "optimizer.latent_weight_clip": "clips the latent weights of binary convs only",
    "optimizer.binary_weight_decay": "the decay of the latent weights of binary convs only",
}

# the keys that make runs of one cell differ: seeds only
SEED_KEYS: tuple[str, ...] = ("seed", "data.seed")

# Trainer settings that cut training or evaluation short, with the value that does not
SMOKE_TRAINER_KEYS: dict[str, Any] = {
    "fast_dev_run": False, "limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_test_batches": 1.0,
    "max_steps": -1, "max_time": None, "overfit_batches": 0.0,
}


def _pop(config: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _plain(config) -> dict:
    """A plain, resolved ``dict`` of a DictConfig or mapping."""
    if not isinstance(config, dict):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(config, resolve=True)
    return copy.deepcopy(config)


def job_identity(config: Mapping) -> dict:
    """The resolved config minus the keys that cannot change a result (see the module docstring)."""
    c = _plain(config)
    for key in NOT_IN_IDENTITY:
        _pop(c, key)
    for key in TRAINER_NOT_IN_IDENTITY:
        _pop(c, f"trainer.{key}")
    return c


def twin_identity(config: Mapping) -> dict:
    c = job_identity(config)
    for key in LATER_STAGE_KEYS:
        _pop(c, key)
    return c


def cell_identity(config: Mapping) -> dict:
    c = job_identity(config)
    for key in (*SEED_KEYS, "study"):
        _pop(c, key)
    return c


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def job_key(config: Mapping) -> str:
    return digest(job_identity(config))


def pretrain_key(config: Mapping) -> str:
    return digest(twin_identity(config))


def cell_key(config: Mapping) -> str:
    return digest(cell_identity(config))


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """Dotted leaves of a nested dict (lists become JSON text so that every value is hashable)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict, tuple)) else v
    return out


def cell_items(config: Mapping) -> dict[str, Any]:
    """The cell identity as dotted leaves (``model.depth``, ``sign._target_``...): what tells cells apart."""
    return flatten(cell_identity(config))


def smoke_reasons(config: Mapping) -> list[str]:
    """The settings that make a run a smoke run (``["trainer.limit_train_batches=2"]``; ``smoke=True``, the key
    that conf/debug/default.yaml adds, whatever the Trainer settings); empty for a full run."""
    if not isinstance(config, Mapping):
        return []
    trainer = config.get("trainer") or {}
    reasons = [f"trainer.{k}={trainer[k]!r}" for k in SMOKE_TRAINER_KEYS if k in trainer and _cuts_short(k, trainer[k])]
    return reasons + (["smoke=True"] if config.get("smoke") else [])


def _cuts_short(key: str, value) -> bool:
    full = SMOKE_TRAINER_KEYS[key]
    if key.startswith("limit_"):  # a float is a fraction (1.0 = all), an int a number of batches (1 = one batch)
        return not (value is None or (isinstance(value, float) and value >= 1.0))
    return value != full  # fast_dev_run=0 and overfit_batches=0 are off, as in Lightning
