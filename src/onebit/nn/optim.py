"""Optimizer parameter groups by role, learning-rate schedules and latent-weight clipping.

Roles (each with its own weight decay, from the optimizer config):

- ``binary``: latent real weights of binary convs (1-bit weight component); Bi-Real trains them without decay;
- ``real``: weights of real-valued convs and linear layers (stem, 1x1 downsample, FC);
- ``bn``: BatchNorm affine parameters, biases and other vectors (PReLU slopes...), never decayed by default.
"""

from __future__ import annotations

import torch
from torch import nn

from onebit.nn.layers import BinaryConv2d

ROLE_DECAY_KEYS = {"binary": "binary_weight_decay", "real": "weight_decay", "bn": "bn_weight_decay"}


def parameter_roles(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split the trainable parameters of ``model`` into the three roles above (each parameter once)."""
    roles: dict[str, list[nn.Parameter]] = {"binary": [], "real": [], "bn": []}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, BinaryConv2d) and name == "weight" and module.weight_precision == 1:
                roles["binary"].append(p)
            elif p.dim() > 1 and not isinstance(module, nn.modules.batchnorm._BatchNorm):
                roles["real"].append(p)
            else:
                roles["bn"].append(p)
    return roles


def param_groups(model: nn.Module, decays: dict[str, float]) -> list[dict]:
    """Parameter groups for ``torch.optim``: one per non-empty role, with ``weight_decay`` from ``decays``; each is
    named by its role, so Lightning's LearningRateMonitor logs ``lr-Adam/binary`` (not ``lr-Adam/pg1``)."""
    return [{"params": ps, "weight_decay": float(decays[role]), "role": role, "name": role}
            for role, ps in parameter_roles(model).items() if ps]


@torch.no_grad()
def clip_latent_weights(model: nn.Module, value: float) -> None:
    """Clip the latent weights of binary convs to ``[-value, value]`` (BinaryDenseNet: 1.3; BinaryConnect)."""
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.weight_precision == 1:
            m.weight.clamp_(-value, value)


# -- schedules: every schedule is a callable ``(optimizer, epochs, **options) -> LRScheduler`` stepped per epoch ----

def constant(optimizer, epochs: int):
    """``lr(e) = lr0``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


def step(optimizer, epochs: int, milestones: list[float], gamma: float = 0.1):
    """``lr(e) = lr0 * gamma^(number of milestones <= e)``; milestones in epochs, or fractions of the run if < 1
    (Bi-Real 18: x0.1 at 10 and 15 of 20 epochs = ``[0.5, 0.75]``)."""
    ms = sorted(int(round(m * epochs)) if m < 1 else int(m) for m in milestones)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=ms, gamma=gamma)


def cosine(optimizer, epochs: int, eta_min: float = 0.0):
    """``lr(e) = eta_min + (lr0 - eta_min) (1 + cos(pi e / epochs)) / 2``."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=eta_min)


def linear(optimizer, epochs: int):
    """``lr(e) = lr0 (1 - e / epochs)``, linear decay to zero (the official Bi-Real PyTorch recipe)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1.0 - e / max(1, epochs)))
