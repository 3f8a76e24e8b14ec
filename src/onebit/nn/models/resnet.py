"""Bi-Real, Res and Plain binary ResNets (Bi-Real Net, ECCV 2018, Fig. 1 and section 4.3).

The three structures of Bi-Real Table 1 share the same binary convolutions and differ only in where shortcuts go:

- ``bireal``: a shortcut around every binary conv, ``out = BN(BinaryConv(Sign(x))) + x`` (Bi-Real block);
- ``res``:    the same convs grouped two per shortcut (three for bottlenecks), ``Sign -> conv -> BN -> Sign ->
  conv -> BN, + x`` (the paper's "Res");
- ``shortcut=False``: no shortcut at all (the paper's "Plain"), for either structure.

Layer for layer the Bi-Real-18/34 follow the official PyTorch code (``birealnet.py``): 7x7 stride-2 stem conv ->
BN -> 3x3 max-pool (no ReLU), stages of 64/128/256/512 channels with [4,4,4,4] (18) or [6,8,12,6] (34) Bi-Real
blocks, downsampling shortcut AvgPool2d(2) -> real 1x1 conv -> BN, global average pool -> real FC. Module names
follow the official code (``conv1``, ``bn1``, ``maxpool``, ``layer1..4``, ``downsample``, ``fc``).

Depths 50/101/152 use bottleneck units (1x1 reduce, 3x3, 1x1 expand). With ``structure=bireal`` each of the
three binary convs has its own shortcut (the official Bi-Real-50 design). The reference does not fix how a
shortcut crosses a change of channel count inside a bottleneck; onebit uses parameter-free shortcuts for every
per-conv shortcut of a bottleneck Bi-Real unit (channel-group average when reducing, channel repetition when
expanding, AvgPool2d(2) for the stride), so its only real-valued layers are the stem and the FC. This is onebit's
choice; ``structure=res`` bottlenecks use the standard AvgPool -> 1x1 conv -> BN downsample.

Where onebit departs from the official code: its downsampling shortcut's ``AvgPool2d(2)`` rounds an odd input
size down (``floor(H / 2)``) while the strided 3x3 conv (padding 1) beside it rounds up (``ceil(H / 2)``), so
the official Bi-Real-18 fails at the first downsampling block whenever a stage sees an odd size (e.g. a 28x28
input with the small stem: 28 -> 14 -> 7 -> 4 vs 3). onebit pools with :func:`shortcut_pool`,
``AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)``: its output size is ``ceil(H / 2)``, the
conv's, and the last window of an odd size averages only its valid pixels. At even sizes it is the official
``AvgPool2d(2)`` exactly (same windows, same divisor 4), so every result at even sizes is unchanged.

The real-valued twin is the same class built with a real activation (``pretrain.activation``) in place of the
sign and ``weight=None``: identical module tree, so its state dict loads into the binary model with strict=True.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn

from onebit.nn.layers import BinaryConv2d, make_nonlinearity
from onebit.nn.quantizers import Quantizer

__all__ = ["BiRealResNet", "DEPTHS", "STRUCTURES", "shortcut_pool"]

# depth -> (unit, residual units per stage) of the standard ResNet of that depth
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STRUCTURES = ("bireal", "res")
STEMS = ("imagenet", "small")
DOWNSAMPLES = ("full_precision", "binary")
INITS = ("kaiming", "glorot")


@dataclass(frozen=True)
class ConvSpec:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int


def shortcut_pool(stride: int = 2) -> nn.AvgPool2d:
    """The downsampling shortcut's 2x2 average pool: ``AvgPool2d(2, stride, ceil_mode=True,
    count_include_pad=False)``. Output ``ceil(H / stride)``, the size of the strided 3x3 conv (padding 1) it is
    added to, at every input size; identical to the official ``AvgPool2d(2)`` at even sizes (see the module
    docstring); at odd sizes the last window averages only the pixels inside the input."""
    return nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)


class ChannelShortcut(nn.Module):
    """Parameter-free shortcut across a channel change: average groups of channels (reduce) or repeat them
    (expand), after :func:`shortcut_pool` when the conv has stride 2. Used only inside bottleneck Bi-Real units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pool = shortcut_pool(stride) if stride > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)
        if self.out_channels < self.in_channels:
            n, c, h, w = x.shape
            return x.view(n, self.out_channels, c // self.out_channels, h, w).mean(2)
        if self.out_channels > self.in_channels:
            return x.repeat_interleave(self.out_channels // self.in_channels, dim=1)
        return x


class BinaryBlock(nn.Module):
    """``out = N(BN_k(conv_k(... BN_1(conv_1(x)) ...)) + shortcut(x))``, where each ``conv_i`` is a
    :class:`BinaryConv2d` (Sign -> binary conv) and N is FTBNN's non-linear module (identity for Bi-Real).

    One conv: the Bi-Real block. Two (three) convs: the "Res" basic (bottleneck) block. ``shortcut=None``: Plain.
    """

    def __init__(self, convs: list[BinaryConv2d], shortcut: nn.Module | None, nonlinearity: nn.Module):
        super().__init__()
        self.depth = len(convs)
        for i, conv in enumerate(convs, start=1):
            self.add_module(f"conv{i}", conv)
            self.add_module(f"bn{i}", nn.BatchNorm2d(conv.out_channels))
        self.downsample = shortcut
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.nonlinearity(out)


class BiRealResNet(nn.Module):
    """A binary ResNet of the Bi-Real family (see the module docstring).

    Args:
        sign: the activation component placed before every binary conv (a sign approximation, or a real
            activation for the real-valued twin); copied into every layer.
        weight: the weight component of every binary conv (``None``: real weights, the twin).
        depth: 18, 34, 50, 101 or 152.
        structure: ``bireal`` (a shortcut per conv) or ``res`` (a shortcut per residual unit).
        shortcut: False removes every shortcut (the paper's "Plain").
        width: channels of the first stage (64 in the paper); stages use width x (1, 2, 4, 8).
        stem: ``imagenet`` (7x7 s2 conv, BN, max-pool) or ``small`` (3x3 s1 conv, BN; for 8x8 / 32x32 inputs).
        downsample: precision of the 1x1 downsample conv, ``full_precision`` (Bi-Real) or ``binary``
            (sign on its input, binary weights; the from-scratch ResNetE ablation).
        nonlinearity: FTBNN module after every residual addition: ``none | prelu | rprelu | fprelu``.
        pad_value: padding value of binarized inputs (0, -1 or +1).
        init: ``kaiming`` (PyTorch default) or ``glorot`` (Glorot-normal conv weights, Bethge et al. 2018).
    """

    def __init__(
        self,
        sign: Quantizer,
        weight: Quantizer | None = None,
        *,
        depth: int = 18,
        structure: str = "bireal",
        shortcut: bool = True,
        width: int = 64,
        stem: str = "imagenet",
        in_channels: int = 3,
        num_classes: int = 1000,
        downsample: str = "full_precision",
        nonlinearity: str = "none",
        pad_value: float = 0.0,
        init: str = "kaiming",
    ):
        super().__init__()
        _check_choice("model.depth", depth, tuple(DEPTHS))
        _check_choice("model.structure", structure, STRUCTURES)
        _check_choice("model.stem", stem, STEMS)
        _check_choice("model.downsample", downsample, DOWNSAMPLES)
        _check_choice("model.init", init, INITS)
        for key, value in (("model.width", width), ("model.in_channels", in_channels),
                           ("model.num_classes", num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}={value!r} is invalid: must be a positive integer")
        self.sign, self.weight, self.pad_value = sign, weight, pad_value
        self.structure, self.shortcut, self.downsample_precision = structure, bool(shortcut), downsample
        self.nonlinearity_name = nonlinearity
        self.bottleneck = DEPTHS[depth][0] == "bottleneck"

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool = nn.Identity()

        channels = width
        for stage, units in enumerate(DEPTHS[depth][1]):
            planes = width * 2**stage
            blocks: list[nn.Module] = []
            for u in range(units):
                stride = 2 if (stage > 0 and u == 0) else 1
                specs = self._unit_specs(channels, planes, stride)
                blocks += self._blocks(specs)
                channels = specs[-1].out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        if init == "glorot":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_normal_(m.weight)

    # -- construction -----------------------------------------------------------------------------------
    def _unit_specs(self, in_ch: int, planes: int, stride: int) -> list[ConvSpec]:
        """The binary convs of one standard residual unit (basic: two 3x3; bottleneck: 1x1, 3x3, 1x1 x4)."""
        if not self.bottleneck:
            return [ConvSpec(in_ch, planes, 3, stride), ConvSpec(planes, planes, 3, 1)]
        return [ConvSpec(in_ch, planes, 1, 1), ConvSpec(planes, planes, 3, stride), ConvSpec(planes, 4 * planes, 1, 1)]

    def _conv(self, spec: ConvSpec) -> BinaryConv2d:
        return BinaryConv2d(
            spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.kernel_size // 2,
            input_quantizer=copy.deepcopy(self.sign), weight_quantizer=copy.deepcopy(self.weight),
            pad_value=self.pad_value,
        )

    def _blocks(self, specs: list[ConvSpec]) -> list[nn.Module]:
        groups = [[s] for s in specs] if self.structure == "bireal" else [specs]
        blocks = []
        for group in groups:
            first, last = group[0], group[-1]
            stride = max(s.stride for s in group)
            shortcut = None
            if self.shortcut:
                shortcut = self._shortcut(first.in_channels, last.out_channels, stride)
            blocks.append(BinaryBlock([self._conv(s) for s in group], shortcut,
                                      make_nonlinearity(self.nonlinearity_name, last.out_channels)))
        return blocks

    def _shortcut(self, in_ch: int, out_ch: int, stride: int) -> nn.Module:
        if in_ch == out_ch and stride == 1:
            return nn.Identity()
        if self.bottleneck and self.structure == "bireal":
            return ChannelShortcut(in_ch, out_ch, stride)
        layers: list[nn.Module] = [shortcut_pool(stride)] if stride > 1 else []
        if self.downsample_precision == "binary":
            conv = BinaryConv2d(in_ch, out_ch, 1, input_quantizer=copy.deepcopy(self.sign),
                                weight_quantizer=copy.deepcopy(self.weight))
        else:
            conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        return nn.Sequential(*layers, conv, nn.BatchNorm2d(out_ch))

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _check_choice(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is invalid: choose one of {', '.join(map(str, choices))}")
