"""Building what a job trains from its config: the data module and the models of each stage.

A stage names the *kind* of model it trains (``onebit.core.registry.MODEL_KINDS``): the same architecture
(``cfg.model``) with different components where the paper puts the Sign and the weight binarizer. A real-valued
model (``model=resnet18``) has one kind, ``real``.
"""

from __future__ import annotations

import hashlib

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from onebit.core.registry import MODEL_KINDS, is_real_model
from onebit.nn.layers import threshold_names
from onebit.records.recipe import Stage


def make_model(cfg: DictConfig, data, kind: str = "binary") -> torch.nn.Module:
    """The configured architecture for ``data``, of the given kind (:data:`MODEL_KINDS`)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODEL_KINDS)}")
    factory = instantiate(cfg.model, _partial_=True)
    common = dict(in_channels=data.in_channels, num_classes=data.num_classes)
    if "width" in cfg.model and cfg.model.width is None:
        common["width"] = getattr(data, "default_width", None) or 64
    if is_real_model(cfg):
        return factory(**common)
    activation, weight = MODEL_KINDS[kind]
    return factory(sign=instantiate(OmegaConf.select(cfg, activation)) if activation else None,
                   weight=instantiate(OmegaConf.select(cfg, weight)) if weight else None, **common)


def make_data(cfg: DictConfig):
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    return data


def transfer(state: dict, model: torch.nn.Module) -> dict:
    """Load ``state`` into ``model`` with ``strict=True`` (a missing or unexpected weight is an error, never a
    silent skip) and return the audit for the record.

    One explicit exception: the learnable thresholds of binary convs (``sign.learnable_threshold=true``) that
    ``state`` lacks (a real-valued twin has none) keep the model's initial value 0 (ReActNet's initialisation) and
    are named in the audit's ``initialised``; any other missing weight is still an error."""
    fresh = [k for k in threshold_names(model) if k not in state]
    own = model.state_dict()
    result = model.load_state_dict({**state, **{k: own[k].clone() for k in fresh}}, strict=True)
    n_params = sum(v.numel() for v in state.values())
    digest = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes()
                                     for v in state.values())).hexdigest()[:16]
    return {"strict": True, "tensors": len(state), "elements": n_params, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "sha256": digest, **({"initialised": fresh} if fresh else {})}


def stage_model(cfg: DictConfig, data, stage: Stage) -> torch.nn.Module:
    """The model that ``stage`` trains, freshly initialised, for ``data`` (or anything with its ``in_channels``,
    ``num_classes`` and ``default_width``): :func:`make_model` of the stage's kind, then the stage's component
    state and frozen parameters (:func:`prepare_stage`)."""
    model = make_model(cfg, data, stage.model)
    prepare_stage(stage, model)
    return model


def prepare_stage(stage: Stage, model: torch.nn.Module) -> None:
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
