"""Efficiency accounting derived from the layers themselves (Bi-Real ECCV 2018, section 4.4).

A forward pass on a dummy input with hooks on every convolution and linear layer counts multiply-accumulates;
each layer's declared precision decides how they count:

- a :class:`~onebit.nn.layers.BinaryConv2d` whose input and weight components are both 1 bit contributes its
  MACs to **BOPs** (XNOR-popcount MACs) and its weight to the **binary parameters**;
- every other conv / linear layer contributes **FLOPs** (real MACs); every other parameter (real convs, FC,
  BatchNorm affine, PReLU slopes, biases, the learnable Sign thresholds of ReActNet's RSign) is a **real
  parameter**. BatchNorm running statistics are buffers, not parameters, and are not counted (as in torchvision's
  and larq's parameter counts). Element-wise operations (BatchNorm, the thresholds' subtraction, additions) are not
  MACs and are not counted, as in Bi-Real section 4.4.

Then ``memory = 1 bit x binary + 32 bit x real`` (in Mbit = 1e6 bit) and ``OPs = BOPs / 64 + FLOPs``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from onebit.nn.layers import BinaryConv2d

__all__ = ["ModelSummary", "summarize", "precision"]


@dataclass(frozen=True)
class ModelSummary:
    binary_params: int
    real_params: int
    bops: int
    flops: int

    @property
    def memory_mbit(self) -> float:
        """Bi-Real section 4.4: ``(1 x binary + 32 x real) / 1e6``."""
        return (self.binary_params + 32 * self.real_params) / 1e6

    @property
    def ops(self) -> float:
        """Bi-Real section 4.4: ``OPs = BOPs / 64 + FLOPs``."""
        return self.bops / 64 + self.flops

    @property
    def binary_mac_share(self) -> float:
        total = self.bops + self.flops
        return self.bops / total if total else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "memory_mbit": self.memory_mbit, "ops": self.ops}


def precision(model: nn.Module) -> dict[str, int]:
    """The bit widths a model declares: ``{"activations": a, "weights": w}``, the widest input and weight
    component over its :class:`~onebit.nn.layers.BinaryConv2d` layers (1 = binary; 32 = real-valued). A binary
    Bi-Real net is 1/1, step 1 of the two-step scheme 1/32, the real-valued twin 32/32. Real-valued layers that
    every model keeps (stem, 1x1 downsample, FC) do not count: they are the same in every kind."""
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    if not convs:
        return {"activations": 32, "weights": 32}
    return {"activations": max(m.input_precision for m in convs), "weights": max(m.weight_precision for m in convs)}


def _is_binary(module: nn.Module) -> bool:
    return isinstance(module, BinaryConv2d) and module.is_binary


def summarize(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> ModelSummary:
    """Count parameters by precision and MACs by precision with one forward pass of a zero input.

    ``input_size`` is (channels, height, width) of one example. The model's training mode is restored.
    """
    binary_params = real_params = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "weight" and isinstance(module, BinaryConv2d) and module.weight_precision == 1:
                binary_params += p.numel()
            else:
                real_params += p.numel()

    macs = {"bops": 0, "flops": 0}

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            n = output[0].numel() * per_output  # one example of the batch
        else:  # nn.Linear
            n = output[0].numel() * module.in_features
        macs["bops" if _is_binary(module) else "flops"] += n

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return ModelSummary(binary_params, real_params, macs["bops"], macs["flops"])
