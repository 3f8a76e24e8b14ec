"""torchvision's full-precision ResNets (He et al. 2016), the "ResNet-18/34 (full precision)" rows of Bi-Real
Table 2 and Table 3. Wrapped, not re-written: this only builds ``torchvision.models.resnet{depth}``."""

from __future__ import annotations

import torchvision
from torch import nn

TORCHVISION_DEPTHS = (18, 34, 50, 101, 152)


def TorchvisionResNet(depth: int = 18, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """``torchvision.models.resnet{depth}(num_classes=...)``; a 1-channel input replaces the first conv."""
    if depth not in TORCHVISION_DEPTHS:
        raise ValueError(f"model.depth={depth!r} is invalid: choose one of {', '.join(map(str, TORCHVISION_DEPTHS))}")
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model
