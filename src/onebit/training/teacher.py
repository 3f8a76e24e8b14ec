"""The teacher of a distilled stage (``conf/distill/``; the loss is ``onebit.nn.distill``).

- ``distill=twin``: the run's own pretrained real-valued twin, the final weights of its ``pretrain`` stage (from
  this run's checkpoint or the pretrain cache): the weights the binary steps start from. Its identity is the
  pretrain key, already derived from the config (``onebit.records.identity.pretrain_key``).
- ``distill=teacher distill.teacher=<path>``: a finished real-valued onebit run (its directory with
  ``record.json``, or its Hydra job folder with ``job.json``: the final stage's ``last.ckpt``), or a ``.ckpt`` of
  onebit's Classifier whose stage trained a real-valued model (``real`` or ``twin``). Its identity is the sha256 of
  its weights (:func:`teacher_key`, the config's ``distill.teacher_key``), never its path.

A teacher is rebuilt from the plain hyperparameters every onebit checkpoint holds, loaded strictly, and frozen
(:func:`frozen`: eval mode, no gradients). :func:`check_teacher` runs before any record exists: a teacher that is
missing, not real-valued, trained for other data, or (with attention transfer) of another block structure is
refused in one line.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from onebit.core.errors import ConfigError
from onebit.core.registry import PRETRAIN, chosen, is_real_model
from onebit.nn.distill import block_shapes
from onebit.records.identity import pretrain_key
from onebit.records.layout import RECORD_NAME, read_pointer, stage_checkpoint
from onebit.records.recipe import Stage, distill_name
from onebit.records.record import CorruptRecordError, read_record
from onebit.training.build import stage_model
from onebit.training.checkpoints import model_weights, read_checkpoint

REAL_KINDS = ("real", "twin")  # the model kinds (onebit.core.registry.MODEL_KINDS) that are real-valued
HINT = "name a finished real-valued onebit run (its directory or job folder, e.g. of model=resnet18) or a .ckpt of one"


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off: a teacher."""
    return model.eval().requires_grad_(False)


def teacher_checkpoint(path) -> Path:
    """The checkpoint a ``distill.teacher`` value names: a ``.ckpt`` file itself, or a finished real-valued run's
    final ``last.ckpt`` (its run directory or Hydra job folder). Anything else is one ConfigError line."""
    given = Path(str(path)).expanduser()
    if not given.exists():
        raise ConfigError(f"distill.teacher={path} does not exist; {HINT}")
    if not given.is_dir():
        return given
    run_dir = given
    if not (given / RECORD_NAME).exists():
        try:
            pointer = read_pointer(given)
        except (OSError, ValueError):
            pointer = None
        if not pointer or not pointer.get("record"):
            raise ConfigError(f"distill.teacher={path} is a directory without a onebit record ({RECORD_NAME}) or "
                              f"job folder; {HINT}")
        run_dir = Path(pointer["record"])
    try:
        record = read_record(run_dir / RECORD_NAME)
    except CorruptRecordError as e:
        raise ConfigError(f"distill.teacher={path}: {e}") from None
    final = record.final_stage
    if record.status != "finished" or final is None:
        raise ConfigError(f"distill.teacher={path} is a {record.status} run, not a finished one; {HINT}")
    if final.model not in REAL_KINDS:
        raise ConfigError(f"distill.teacher={path} is not real-valued: its final stage {final.name!r} trained a "
                          f"{final.model} model; {HINT}")
    ckpt = stage_checkpoint(run_dir, final.name, "last")
    if ckpt is None:
        raise ConfigError(f"distill.teacher={path}: stage {final.name!r} of that run has no last.ckpt (deleted?); "
                          "name a run that has it, or train the teacher again")
    return ckpt


def read_teacher(path) -> dict:
    """The teacher's checkpoint (:func:`teacher_checkpoint`), checked to be onebit's and real-valued."""
    where = teacher_checkpoint(path)
    ckpt = read_checkpoint(where, hint=HINT)
    hp = ckpt.get("hyper_parameters") or {}
    if not {"config", "stage", "in_channels", "num_classes"} <= set(hp):
        raise ConfigError(f"distill.teacher={path}: {where} is not a checkpoint of onebit's Classifier (its "
                          f"hyperparameters are missing); {HINT}")
    if hp["stage"].get("model") not in REAL_KINDS:
        raise ConfigError(f"distill.teacher={path} is not real-valued: {where} is of stage "
                          f"{hp['stage'].get('name')!r}, a {hp['stage'].get('model')} model; {HINT}")
    return ckpt


def weights_digest(state: dict) -> str:
    """sha256 (16 hex digits) of a state dict: every tensor's name and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_key(path) -> str | None:
    """The identity of a ``distill.teacher`` (``${onebit_teacher_key:...}`` in conf/distill/teacher.yaml): the
    :func:`weights_digest` of its weights, the same whether it is named by run directory, job folder or
    ``.ckpt``; ``None`` when ``path`` names no usable teacher (the job's checks then say why, in one line).
    Computed once per checkpoint file version (path, modification time, size)."""
    if path is None:
        return None
    try:
        where = teacher_checkpoint(path).resolve()
        stat = where.stat()
    except (ConfigError, OSError):
        return None
    return _key(str(where), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _key(where: str, mtime_ns: int, size: int) -> str | None:
    try:
        return weights_digest(model_weights(read_teacher(where)))
    except ConfigError:
        return None


def teacher_model(ckpt: dict) -> nn.Module:
    """The frozen model of a teacher's checkpoint, rebuilt from its hyperparameters, weights loaded strictly."""
    hp = ckpt["hyper_parameters"]
    shape = SimpleNamespace(in_channels=hp["in_channels"], num_classes=hp["num_classes"],
                            default_width=hp.get("default_width"))
    stage = hp["stage"]
    spec = Stage(**{**stage, "optimizer": tuple(sorted((stage.get("optimizer") or {}).items()))})
    model = stage_model(OmegaConf.create(hp["config"]), shape, spec)
    model.load_state_dict(model_weights(ckpt), strict=True)
    return frozen(model)


def check_compatible(cfg: DictConfig, ckpt: dict, data) -> None:
    """The teacher was trained for this run's data: the same number of classes and input channels."""
    hp = ckpt["hyper_parameters"]
    for key in ("num_classes", "in_channels"):
        if hp[key] != getattr(data, key):
            raise ConfigError(f"distill.teacher={cfg.distill.teacher} cannot teach this run: it was trained for "
                              f"{key}={hp[key]}, and data={chosen(cfg, 'data') or '<set>'} has {key}="
                              f"{getattr(data, key)}; train a real-valued teacher on this data")


def twin_teacher(cfg: DictConfig, data, weights: dict) -> nn.Module:
    """The run's real-valued twin with its pretrained ``weights``, frozen."""
    model = stage_model(cfg, data, Stage(PRETRAIN, "twin", 1, cached=True))
    model.load_state_dict(weights, strict=True)
    return frozen(model)


def load_teacher(cfg: DictConfig, data, twin_weights: Callable[[], dict]) -> tuple[nn.Module, dict]:
    """The teacher of a distilled stage and what the stage's record says of it (``teacher``): ``{"source": "twin",
    "key": <pretrain key>}`` or ``{"source": "teacher", "key": <weights digest>, "path": <its checkpoint>}``.
    ``twin_weights()``: the final weights of this run's pretrain stage."""
    name = distill_name(cfg)
    if name == "twin":
        return twin_teacher(cfg, data, twin_weights()), {"source": "twin", "key": pretrain_key(cfg)}
    if name == "teacher":
        ckpt = read_teacher(cfg.distill.teacher)
        check_compatible(cfg, ckpt, data)
        return teacher_model(ckpt), {"source": "teacher", "key": weights_digest(model_weights(ckpt)),
                                     "path": str(teacher_checkpoint(cfg.distill.teacher).resolve())}
    raise ConfigError(f"distill={name} has no teacher; valid: twin, teacher (or none)")


def check_teacher(cfg: DictConfig, data, models: dict[str, nn.Module]) -> None:
    """Before any record: the teacher can serve this run (``models``: the recipe's models by kind, as the job's
    preparation built them). A ``distill=teacher`` checkpoint must exist, be onebit's, real-valued and trained for
    this data; with attention transfer (``distill.attention_weight > 0``) the teacher's residual blocks must match
    the student's in number and spatial size (``onebit.nn.distill.blocks``)."""
    name = distill_name(cfg)
    if name == "none" or is_real_model(cfg):
        return
    if name == "teacher":
        ckpt = read_teacher(cfg.distill.teacher)
        check_compatible(cfg, ckpt, data)
        teacher = teacher_model(ckpt)
    else:
        teacher = models["twin"]  # pretrain=none was refused by onebit.training.checks
    weight = cfg.distill.attention_weight
    if weight > 0:
        student = models["binary"] if "binary" in models else next(m for k, m in models.items() if k != "twin")
        size = tuple(data.input_size)
        s, t = block_shapes(student, size), block_shapes(teacher, size)
        if not s or not t:
            which = f"model={chosen(cfg, 'model') or '<set>'}" if not s else "the teacher"
            raise ConfigError(f"distill.attention_weight={weight} needs residual blocks (layer1..layer4) in the "
                              f"student and the teacher; {which} has none: set distill.attention_weight=0")
        if [x[1:] for x in s] != [x[1:] for x in t]:
            raise ConfigError(f"distill.attention_weight={weight}: the teacher's blocks do not match the student's "
                              f"({len(t)} blocks of sizes {_sizes(t)} vs {len(s)} of {_sizes(s)}); set "
                              "distill.attention_weight=0, or use a teacher of the student's structure (distill=twin)")


def _sizes(shapes: list[tuple]) -> str:
    return ",".join(dict.fromkeys(f"{h}x{w}" for _, h, w in shapes))
