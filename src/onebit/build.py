"""Building what a job trains from its config: the data module and the models of each stage.

A stage names the *kind* of model it trains (:data:`MODEL_KINDS`): the same architecture (``cfg.model``) with
different components where the paper puts the Sign and the weight binarizer. A real-valued model
(``model=resnet18``) has one kind, ``real``.
"""

from __future__ import annotations

import hashlib

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from onebit import config as C

# kind -> (activation component, weight component), as config paths (None: a real-valued component)
MODEL_KINDS = {
    "twin": ("pretrain.activation", None),  # Bi-Real 4.1: the real-valued net that initialises the binary one
    "binary_activations": ("sign", None),   # binary activations, real weights (step 1 of the two-step scheme)
    "binary": ("sign", "weight"),           # binary activations and weights
    "real": (None, None),                   # a real-valued model (torchvision's ResNets)
}


def make_model(cfg: DictConfig, data, kind: str = "binary") -> torch.nn.Module:
    """The configured architecture for ``data``, of the given kind (:data:`MODEL_KINDS`)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODEL_KINDS)}")
    factory = instantiate(cfg.model, _partial_=True)
    common = dict(in_channels=data.in_channels, num_classes=data.num_classes)
    if "width" in cfg.model and cfg.model.width is None:
        common["width"] = getattr(data, "default_width", None) or 64
    if C.is_real_model(cfg):
        return factory(**common)
    activation, weight = MODEL_KINDS[kind]
    return factory(sign=instantiate(OmegaConf.select(cfg, activation)) if activation else None,
                   weight=instantiate(OmegaConf.select(cfg, weight)) if weight else None, **common)


def make_data(cfg: DictConfig):
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    return data


def config_error(e: BaseException) -> C.ConfigError:
    """One ConfigError line from a bad value found while building: the real cause's own words
    (``onebit.config.cause_line``), which name the value."""
    return C.ConfigError(C.cause_line(e, with_type=False))


def transfer(state: dict, model: torch.nn.Module) -> dict:
    """Load ``state`` into ``model`` with ``strict=True`` (a missing or unexpected weight is an error, never a
    silent skip) and return the audit for the record."""
    result = model.load_state_dict(state, strict=True)
    n_params = sum(v.numel() for v in state.values())
    digest = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes()
                                     for v in state.values())).hexdigest()[:16]
    return {"strict": True, "tensors": len(state), "elements": n_params, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "sha256": digest}


def stage_model(cfg: DictConfig, data, stage) -> torch.nn.Module:
    """The model that ``stage`` (an ``onebit.stages.Stage``) trains, freshly initialised, for ``data`` (or anything
    with its ``in_channels``, ``num_classes`` and ``default_width``): :func:`make_model` of the stage's kind, then
    the stage's component state and frozen parameters (``onebit.stages._prepare``)."""
    from onebit.stages import _prepare

    model = make_model(cfg, data, stage.model)
    _prepare(stage, model)
    return model


def recorded_stage(record, name: str):
    """The ``onebit.stages.Stage`` of a recorded run's stage, as its config's recipe defines it (a stage of a recipe
    given to ``run_recipe`` directly, not in the config: a plain stage of its model kind)."""
    from onebit.stages import Stage, stages_for

    recipe, st = {s.name: s for s in stages_for(OmegaConf.create(record.config))}, record.stages[name]
    return recipe.get(name) or Stage(name, st.model, st.epochs)


def model_from_record(record, stage: str | None = None) -> torch.nn.Module:
    """Rebuild the model of one stage of a recorded run (default: its final stage) with that stage's final
    weights (``onebit.checkpoints.stage_weights``), in eval mode (for analysis and plots)."""
    from onebit.checkpoints import stage_weights

    name = stage or record.final_stage.name
    cfg = OmegaConf.create(record.config)
    model = stage_model(cfg, instantiate(cfg.data), recorded_stage(record, name))
    model.load_state_dict(stage_weights(record, name), strict=True)
    return model.eval()
