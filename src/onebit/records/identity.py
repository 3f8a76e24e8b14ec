"""What identifies a job, a pretrained twin and a table cell: one rule, derived from the whole resolved config.

- The **job identity** is the resolved config minus :data:`NOT_IN_IDENTITY` (keys that cannot change a result,
  each with its reason) and minus the Lightning Trainer arguments in :data:`TRAINER_NOT_IN_IDENTITY`. Every other
  key, including every Trainer argument not on that list, is in it: a smoke run
  (``+trainer.limit_train_batches=2``) is a different job from the full run, and so is the same config in another
  ``study``. Its hash is the :func:`job_key` of the job index (skip finished, resume interrupted).
- Keys added after runs were recorded, in :data:`DEFAULT_NOT_IN_IDENTITY`, leave the job identity while they hold
  their default, the value that reproduces what every earlier run computed: an existing config keeps its job key,
  pretrain key and cell, and its earlier records stay its records. Any other value is in the identity.
- The user's ``callbacks`` (conf/callbacks): each is in the identity unless its class is one of
  :data:`NEUTRAL_CALLBACKS` (a progress bar, a checkpoint writer, a monitor): an early stop is, a progress bar is not.
- The **twin identity** (the pretrain-cache key) is the job identity minus :data:`LATER_STAGE_KEYS`, the keys
  that only stages after pretraining read: a sweep over ``sign`` shares one twin.
- A **cell** of a table is the job identity minus :data:`SEED_KEYS` and ``study``: runs in one cell are identical
  except for their seed, so their mean over seeds is meaningful. Two configs never share a cell.

A run is a **smoke run** when a Trainer setting cuts its training or evaluation short (:data:`SMOKE_TRAINER_KEYS`,
:func:`cuts_short`: every form Lightning accepts, by Lightning's own rules) or its config says ``smoke: true`` (every
``debug=`` option, conf/debug/default.yaml); it is recorded as such and tables leave it out by name.
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
    "distill.teacher": "where a distill=teacher teacher's files are (a path); what it is, its weights' checksum, is "
                       "distill.teacher_key, in the identity",
    "diagnostics": "what is measured about the binary layers (flip ratio, clip share, +1 share: diag/*) and logged; "
                   "the training is the same",
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

# dotted keys added after records existed -> (the default, reason): out of the identity while they hold exactly the
# default (same type and value), which computes what every earlier run computed; any other value is in it
DEFAULT_NOT_IN_IDENTITY: dict[str, tuple[Any, str]] = {
    "sign.learnable_threshold": (False, "ReActNet's learnable per-channel threshold of the Sign (RSign), added later; "
                                        "false is the plain sign(x) of every earlier run"),
    "distill": ({"name": "none"}, "the teacher of the binary steps (conf/distill), added later; distill=none is the "
                                  "cross-entropy training of every earlier run"),
    "callbacks": ({}, "the user's own Lightning callbacks (conf/callbacks), added later; none (callbacks=default, or "
                      "only NEUTRAL_CALLBACKS) is what every earlier run did"),
}

# The ``callbacks`` group's rule: a user's callback whose ``_target_`` is one of these Lightning classes (in
# CALLBACK_PACKAGES) cannot change a result, so its entry leaves the identity; every other callback (EarlyStopping,
# a Timer, which can stop training, any class of the user's own or a subclass of these) is in it.
NEUTRAL_CALLBACKS: dict[str, str] = {
    "RichProgressBar": "terminal display", "TQDMProgressBar": "terminal display",
    "ModelSummary": "prints the model's summary", "RichModelSummary": "prints the model's summary",
    "ModelCheckpoint": "writes checkpoint files of its own beside onebit's; the training is the same",
    "LearningRateMonitor": "sends the learning rates to the logger",
    "DeviceStatsMonitor": "sends device statistics to the logger",
}
CALLBACK_PACKAGES = ("pytorch_lightning.callbacks", "lightning.pytorch.callbacks")


def neutral_callback(target) -> bool:
    """Whether a callback's ``_target_`` names a class of :data:`NEUTRAL_CALLBACKS` (by any module path inside
    :data:`CALLBACK_PACKAGES`, e.g. ``pytorch_lightning.callbacks.RichProgressBar``)."""
    module, _, name = str(target).rpartition(".")
    return name in NEUTRAL_CALLBACKS and any(module == p or module.startswith(p + ".") for p in CALLBACK_PACKAGES)

# keys read only by the stages after pretraining: not part of the pretrained twin's identity
LATER_STAGE_KEYS: dict[str, str] = {
    "sign": "the twin has the pretraining activation where the Sign is",
    "weight": "the twin has real-valued weights",
    "epochs": "the binary stage's length; the twin's is pretrain.epochs (resolved, so it is in the key)",
    "bn_retrain": "a stage after the binary one",
    "recipe": "the steps after pretraining (one_step, two_step)",
    "distill": "the teacher of the steps after pretraining; the twin trains on cross-entropy",
    "study": "a twin depends on its config, not on the study that asked for it: studies share it",
    "optimizer.latent_weight_clip": "clips the latent weights of binary convs only",
    "optimizer.binary_weight_decay": "the decay of the latent weights of binary convs only",
}

# the keys that make runs of one cell differ: seeds only
SEED_KEYS: tuple[str, ...] = ("seed", "data.seed")

# Trainer arguments that can cut training or evaluation short, each with the forms that do not (Lightning 2.x:
# pytorch_lightning/trainer/setup.py _init_debugging_flags and _determine_batch_limits, trainer/connectors/
# data_connector.py _parse_num_batches, loops/utilities.py _is_max_limit_reached, callbacks/timer.py Timer).
# :func:`cuts_short` is the one rule; tests/test_smoke_forms.py checks it against Lightning's parsed values.
# Not here, because they cannot shorten what a onebit stage trains or evaluates: max_epochs (onebit passes each
# stage's epochs, which win over trainer.max_epochs), min_epochs / min_steps (they only delay an early stop),
# num_sanity_val_steps (validation before training), val_check_interval / check_val_every_n_epoch (how often the
# full validation set is read, not how much of it or of the training; in the identity, so another job and cell).
SMOKE_TRAINER_KEYS: dict[str, str] = {
    "fast_dev_run": "off when falsy (False, 0); True or n: n batches of every loop, 1 epoch, no checkpoints",
    "limit_train_batches": "null or the float 1.0 = all batches; a float in [0, 1) = int(n * f) of the n batches; "
                           "an int (1 = one batch, 0 = none) or a whole float above 1 (2.0 = 2 batches) = at most "
                           "that many, a smoke run whatever the data's size (the config cannot know n)",
    "limit_val_batches": "as limit_train_batches; 0 (no validation) leaves no val/* metrics and no best.ckpt",
    "limit_test_batches": "as limit_train_batches: the test/* metrics of the tables",
    "limit_predict_batches": "as limit_train_batches (onebit runs no predict loop; counted so none is cut silently)",
    "max_steps": "-1 = off; any step count (0 included) can stop training before its epochs end",
    "max_time": "null = off; a 'DD:HH:MM:SS' string, a dict of timedelta arguments or a timedelta stops training "
                "when the time is up, however long (whether it did depends on the machine)",
    "overfit_batches": "0 / 0.0 = off; any other value (1.0 included) trains and validates on the same unshuffled "
                       "training batches",
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


def _get(config: dict, dotted: str):
    node = config
    for p in dotted.split("."):
        node = node.get(p) if isinstance(node, dict) else None
    return node


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
    callbacks = c.get("callbacks")
    if isinstance(callbacks, dict):  # the callbacks that cannot change a result leave it (NEUTRAL_CALLBACKS)
        c["callbacks"] = {k: v for k, v in callbacks.items() if v is not None
                          and not (isinstance(v, dict) and neutral_callback(v.get("_target_")))}
    for key, (default, _) in DEFAULT_NOT_IN_IDENTITY.items():
        value = _get(c, key)
        if type(value) is type(default) and value == default:
            _pop(c, key)
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
    """The cell identity as dotted leaves (``model.depth``, ``sign._target_``...): what tells cells apart and what
    tables and figures name cells by. A :data:`DEFAULT_NOT_IN_IDENTITY` key that the identity leaves out at its
    default is shown with that default (``sign.learnable_threshold: False``, ``distill.name: none``) where its group
    is in the identity: a label says what the run computed, not that a key was absent. The keys (:func:`cell_key`)
    come from the identity itself, so this changes no key and no grouping."""
    items = flatten(cell_identity(config))
    for key, (default, _) in DEFAULT_NOT_IN_IDENTITY.items():
        shown = any(k == key or k.startswith(f"{key}.") for k in items)
        group_there = "." not in key or any(k.startswith(f"{key.split('.')[0]}.") for k in items)
        if default != {} and group_there and not shown:
            items.update(flatten({key: default}))
    return items


def smoke_reasons(config: Mapping) -> list[str]:
    """The settings that make a run a smoke run (``["trainer.limit_train_batches=2"]``; ``smoke=True``, the key
    that conf/debug/default.yaml adds, whatever the Trainer settings); empty for a full run."""
    if not isinstance(config, Mapping):
        return []
    trainer = config.get("trainer") or {}
    reasons = [f"trainer.{k}={trainer[k]!r}" for k in SMOKE_TRAINER_KEYS if k in trainer and cuts_short(k, trainer[k])]
    return reasons + (["smoke=True"] if config.get("smoke") else [])


def cuts_short(key: str, value) -> bool:
    """Whether Trainer argument ``key`` (a key of :data:`SMOKE_TRAINER_KEYS`) set to ``value`` can cut a run short,
    by Lightning's rules; a form that is not provably off (a string, a value Lightning refuses, which
    ``onebit.training.checks`` refuses before any run) counts as cutting short."""
    if key.startswith("limit_"):
        # Lightning: None -> 1.0; [0, 1] kept as given; a whole number above 1 -> int; anything else refused. Then an
        # int (bools too) means min(n, limit) batches and a float int(n * limit): only the float 1.0 keeps all n.
        return not (value is None or (isinstance(value, float) and value == 1.0))
    if key == "fast_dev_run":
        return bool(value)  # Lightning: `if fast_dev_run:` ... num_batches = int(fast_dev_run)
    if key == "max_steps":
        return not (_is_number(value) and value == -1)  # _is_max_limit_reached: max != -1 and step >= max
    if key == "max_time":
        return value is not None  # a Timer callback for any other value, a zero duration included
    if key == "overfit_batches":
        return not (isinstance(value, (int, float)) and value == 0)  # Lightning: enabled when overfit_batches > 0
    raise KeyError(f"{key} is not a Trainer argument that can cut a run short: {', '.join(SMOKE_TRAINER_KEYS)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
