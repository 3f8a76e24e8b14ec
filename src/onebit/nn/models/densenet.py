"""BinaryDenseNet-28 / -37 (Bethge et al., "Back to Simplicity", arXiv 1906.08637), following larq-zoo.

- dense layer: ``x <- concat(x, BinaryConv3x3(Sign(BN(x))))`` with growth rate 64 (B2S: STE with t = 1.3 and
  latent weights clipped to [-1.3, 1.3]; in onebit those are the ``sign``/``weight`` options and the optimizer's
  weight clipping, set together by ``experiment=binarydensenet28``);
- transition (between blocks): ``BN -> MaxPool2d(2) -> ReLU -> real 1x1 conv`` to
  ``round(C // reduction / 32) * 32`` channels (larq-zoo's formula). Where onebit departs from larq-zoo: the
  max-pool uses ``ceil_mode=True`` (output ``ceil(H / 2)``; the last window of an odd size takes the max of its
  valid pixels), where larq-zoo's ``MaxPool2D(2)`` floors. Identical at even sizes; at odd sizes the floor
  drops the last row and column and shrinks small inputs to nothing (7x7 with the small stem: 7 -> 3 -> 1 -> 0,
  an error; a 28x28 input with the imagenet stem likewise), the ceil keeps every pixel (7 -> 4 -> 2 -> 1);
- stem ``imagenet``: 7x7 s2 conv (64) -> BN -> ReLU -> 3x3 s2 max-pool; stem ``small``: one 3x3 conv (larq-zoo's
  stem for inputs under 50 pixels);
- head: BN -> ReLU -> global average pool -> real FC;
- blocks (6, 6, 6, 5) with reductions (2.7, 2.7, 2.2) for 28, (6, 8, 12, 6) with (3.3, 3.3, 4) for 37.

Dense connections are this family's shortcuts, so ``shortcut=false`` is refused rather than ignored.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from onebit.nn.layers import BinaryConv2d
from onebit.nn.quantizers import Quantizer

__all__ = ["BinaryDenseNet", "DENSENET_DEPTHS"]

DENSENET_DEPTHS = {
    28: ((6, 6, 6, 5), (2.7, 2.7, 2.2)),
    37: ((6, 8, 12, 6), (3.3, 3.3, 4.0)),
}


class DenseLayer(nn.Module):
    """``concat(x, conv(Sign(BN(x))))``."""

    def __init__(self, in_channels: int, growth: int, sign: Quantizer, weight: Quantizer | None, pad_value: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = BinaryConv2d(in_channels, growth, 3, 1, 1, input_quantizer=copy.deepcopy(sign),
                                 weight_quantizer=copy.deepcopy(weight), pad_value=pad_value)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.bn(x))], dim=1)


class Transition(nn.Sequential):
    """``BN -> MaxPool2d(2, ceil_mode=True) -> ReLU -> real 1x1 conv`` (larq-zoo order; ceil_mode: see the
    module docstring)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.MaxPool2d(2, 2, ceil_mode=True), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False))


class BinaryDenseNet(nn.Module):
    """BinaryDenseNet (see the module docstring). ``sign``/``weight`` as for :class:`BiRealResNet`."""

    def __init__(
        self,
        sign: Quantizer,
        weight: Quantizer | None = None,
        *,
        depth: int = 28,
        growth: int = 64,
        width: int = 64,
        stem: str = "imagenet",
        in_channels: int = 3,
        num_classes: int = 1000,
        shortcut: bool = True,
        pad_value: float = 0.0,
    ):
        super().__init__()
        if depth not in DENSENET_DEPTHS:
            raise ValueError(f"model.depth={depth!r} is invalid: choose one of {', '.join(map(str, DENSENET_DEPTHS))}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"model.stem={stem!r} is invalid: choose one of imagenet, small")
        if not shortcut:
            raise ValueError("shortcut=false is invalid for BinaryDenseNet: its dense connections are its shortcuts")
        for key, value in (("model.width", width), ("model.growth", growth), ("model.num_classes", num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}={value!r} is invalid: must be a positive integer")
        blocks, reductions = DENSENET_DEPTHS[depth]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False))
        layers: list[nn.Module] = []
        channels = width
        for b, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(channels, growth, sign, weight, pad_value))
                channels += growth
            if b < len(blocks) - 1:
                out = max(32, round(channels // reductions[b] / 32) * 32)
                layers.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*layers)
        self.head_bn = nn.BatchNorm2d(channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.head_bn(self.features(self.stem(x))))
        return self.fc(self.avgpool(x).flatten(1))
