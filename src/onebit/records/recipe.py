"""Training recipes as pure data: a recipe is a list of :class:`Stage` specs (``onebit.training.loop.run_recipe``
is the one loop that runs any of them).

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
``conf/recipe/``: the loop does not change. Stage names and model kinds: ``onebit.core.registry``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from onebit.core.registry import BN_RETRAIN, MODEL_KINDS, PRETRAIN, REAL, is_real_model
from onebit.records.record import StageRecord

TRAINABLE = ("all", "batchnorm")


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Args:
        name: the stage's name in the record, checkpoints and W&B (``job_type``).
        model: which model it trains (``onebit.core.registry.MODEL_KINDS``: twin, binary_activations, binary, real).
        epochs: how long.
        init: the earlier stage whose final weights initialise this one (strict transfer), or ``None`` for a
            fresh initialisation.
        cached: trained once per ``pretrain_key`` and shared through the pretrain cache.
        trainable: ``all`` parameters, or ``batchnorm`` only (everything else frozen).
        fixed_weights: binary weights fixed to +-1 without a scale (Bi-Real 4.1's BN retraining).
        optimizer: ``(key, value)`` pairs that replace the optimizer config's values in this stage only
            (e.g. ReActNet's step-1 weight decay).
        distill: trained with the teacher of ``distill`` (conf/distill; ``onebit.nn.distill``): every step of
            the recipe when ``distill`` is not none, never the pretrain or bn_retrain stage.
    """

    name: str
    model: str
    epochs: int
    init: str | None = None
    cached: bool = False
    trainable: str = "all"
    fixed_weights: bool = False
    optimizer: tuple = ()
    distill: bool = False

    def record(self) -> StageRecord:
        return StageRecord(name=self.name, model=self.model, epochs=self.epochs,
                           init="cache" if self.cached else self.init)


STEP_KEYS = ("name", "model", "epochs", "optimizer")
DEFAULT_RECIPE = {"name": "one_step", "steps": [{"name": "binary", "model": "binary"}]}  # configs before recipes


def stages_for(cfg: DictConfig) -> tuple[Stage, ...]:
    """The recipe of a config (see the module docstring), validated."""
    if is_real_model(cfg):
        return validate((Stage(REAL, "real", int(cfg.epochs)),))
    stages: list[Stage] = []
    if cfg.pretrain.name != "none":
        stages.append(Stage(PRETRAIN, "twin", int(cfg.pretrain.epochs), cached=True))
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
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"{epochs_key(cfg, i)}={epochs!r} is invalid: must be a positive integer (the epochs of "
                             f"step {step['name']!r} of recipe={name})")
        overrides = step.get("optimizer") or {}
        for key in overrides:
            if key not in cfg.optimizer:
                raise ValueError(f"recipe={name}: step {step['name']!r} sets optimizer.{key}, which "
                                 f"optimizer={cfg.optimizer._target_.rsplit('.', 1)[-1]} does not have; valid: "
                                 f"{', '.join(k for k in cfg.optimizer if not k.startswith('_'))}")
        stages.append(Stage(str(step["name"]), str(step["model"]), epochs,
                            init=stages[-1].name if stages else None,
                            optimizer=tuple(sorted((str(k), v) for k, v in overrides.items())),
                            distill=distill_name(cfg) != "none"))
    if cfg.bn_retrain:
        if stages[-1].model != "binary":
            raise ValueError(f"bn_retrain=true needs a recipe that ends with a binary model; recipe={name} ends "
                             f"with {stages[-1].name!r} ({stages[-1].model})")
        stages.append(Stage(BN_RETRAIN, "binary", 1, init=stages[-1].name, trainable="batchnorm",
                            fixed_weights=True))
    return validate(tuple(stages))


def distill_name(cfg) -> str:
    """The config's ``distill`` option (``none`` for a config from before the group)."""
    return str((cfg.get("distill") or {}).get("name", "none"))


_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # ${key.path}: an interpolation that is one absolute key


def epochs_key(cfg: DictConfig, i: int) -> str:
    """The key that sets the epochs of the recipe's step ``i``, as the user types it: its interpolation followed
    to the key that holds the value (``two_step``'s first step: ``${recipe.step1_epochs}`` -> ``recipe.step1_epochs``;
    a step without ``epochs``: ``epochs``), else the step's own ``recipe.steps.<i>.epochs``."""
    recipe = cfg.get("recipe") or DEFAULT_RECIPE
    if "epochs" not in recipe["steps"][i]:
        return "epochs"
    key = f"recipe.steps.{i}.epochs"
    for _ in range(16):  # a chain of references (a cycle is OmegaConf's error, raised before this)
        node = _node(cfg, key)
        match = _REFERENCE.fullmatch(str(node._value())) if node is not None and node._is_interpolation() else None
        if match is None:
            break
        key = match.group(1)
    return key


def _node(cfg: DictConfig, key: str):
    """The config node at a dotted key (list indices as numbers), unresolved; None where there is none."""
    node = cfg
    for part in key.split("."):
        if OmegaConf.is_list(node) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        elif OmegaConf.is_dict(node) and part in node:
            node = node._get_node(part)
        else:
            return None
    return node


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


def recorded_stage(record, name: str):
    """The :class:`Stage` of a recorded run's stage, as its config's recipe defines it (a stage of a recipe
    given to ``run_recipe`` directly, not in the config: a plain stage of its model kind)."""
    recipe, st = {s.name: s for s in stages_for(OmegaConf.create(record.config))}, record.stages[name]
    return recipe.get(name) or Stage(name, st.model, st.epochs)
