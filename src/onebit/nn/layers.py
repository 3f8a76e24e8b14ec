"""Layers that combine components: the binary convolution and FTBNN's non-linear modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.nn.quantizers import Quantizer, RealWeight

__all__ = ["BinaryConv2d", "PReLU", "RPReLU", "FPReLU", "make_nonlinearity", "NONLINEARITIES", "threshold_names"]

PAD_VALUES = (0.0, -1.0, 1.0)


class BinaryConv2d(nn.Conv2d):
    """``y = conv(a(x), w(W_r))``: an activation component ``a`` applied to the input, then a convolution with
    the weight produced by a weight component ``w`` from the latent real weight ``W_r`` (Bi-Real Fig. 1).

    With ``a`` a sign approximation and ``w`` a weight binarizer, the multiply-accumulates are XNOR-popcounts
    (BOPs). The real-valued twin uses this same layer with a real activation (clip, ReLU...) and
    :class:`~onebit.nn.quantizers.RealWeight`, so twin and binary models have identical state dicts.

    **Learnable threshold** (``sign.learnable_threshold=true``; ReActNet's RSign, Liu et al. ECCV 2020 Eq. 1-2): when
    the input component declares ``learnable_threshold``, the layer has a parameter ``threshold`` ``alpha`` of shape
    (in_channels,), initialised to 0, and computes ``y = conv(a(x - alpha_c), w(W_r))``: ``x_b = +1 if x >= alpha_c
    else -1`` per input channel c (ReActNet's Eq. 1 writes ``x > alpha_c``; onebit keeps Bi-Real Eq. 1's ``+1`` at
    equality, a difference only where ``x = alpha_c`` exactly). Autograd through ``x - alpha`` gives ReActNet's Eq. 2
    with the sign approximation's pseudo-gradient g: ``dL/dx = dL/dy g(x - alpha_c)`` and
    ``dL/dalpha_c = -sum_{n,h,w} dL/dy g(x - alpha_c)`` over the channel's elements. A 1-D parameter, it is in the
    optimizer's ``bn`` role (no weight decay) and counts as a 32-bit parameter in the summary. Without it (the
    default) the layer has no ``threshold`` and its state dict is unchanged. The padding is applied after the
    binarization, so it is not shifted.

    ``pad_value`` is the value used to pad the *binarized* input: 0 (default, as in the paper's and the official
    code's convolutions, which makes the border ternary) or -1 / +1 (a purely binary input).

    Inference (eval mode, no gradient: ``torch.inference_mode`` / ``no_grad``) computes ``w(W_r)`` once and reuses it
    until it would change: a new version of ``W_r`` (an optimizer step, ``load_state_dict``, any in-place write
    through the parameter), another tensor (``.to(...)``), a change of the weight component's state (BN
    retraining's ``fixed``), or a switch to training mode. The outputs are exactly those of recomputing it (the same
    function of the same tensor). Writes through ``W_r.data`` in eval mode bypass the version counter: call
    ``model.train()`` / ``model.eval()`` after them. The cached tensor is one more copy of the weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        input_quantizer: Quantizer,
        weight_quantizer: Quantizer | None = None,
        pad_value: float = 0.0,
        groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        if float(pad_value) not in PAD_VALUES:
            raise ValueError(f"model.pad_value={pad_value!r} is invalid: choose one of 0, -1, 1")
        self.input_quantizer = input_quantizer
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else RealWeight()
        self.pad_value = float(pad_value)
        learnable = getattr(input_quantizer, "learnable_threshold", False)
        self.threshold = nn.Parameter(torch.zeros(in_channels)) if learnable else None
        self._inference_weight: tuple | None = None  # (key, w(W_r)) in eval mode without gradient

    @property
    def input_precision(self) -> int:
        return self.input_quantizer.precision

    @property
    def weight_precision(self) -> int:
        return self.weight_quantizer.precision

    @property
    def is_binary(self) -> bool:
        """True when both operands are 1 bit: its MACs count as BOPs (Bi-Real section 4.4)."""
        return self.input_precision == 1 and self.weight_precision == 1

    def quantized_weight(self) -> Tensor:
        """``w(W_r)``; in inference, computed once per version of ``W_r`` and of the weight component's state."""
        if torch.compiler.is_compiling():  # torch.compile: fused into the graph; a cache would recompile per version
            return self.weight_quantizer(self.weight)
        if self.training or torch.is_grad_enabled():
            if self._inference_weight is not None:
                self._inference_weight = None
            return self.weight_quantizer(self.weight)
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, w.device, self.weight_quantizer.state_key())
        if self._inference_weight is None or self._inference_weight[0] != key:
            self._inference_weight = (key, self.weight_quantizer(w))
        return self._inference_weight[1]

    def train(self, mode: bool = True):
        self._inference_weight = None
        return super().train(mode)

    def __getstate__(self):  # copies and pickles never carry the cache (it may be an inference-mode tensor)
        return {**super().__getstate__(), "_inference_weight": None}

    def forward(self, x: Tensor) -> Tensor:
        if self.threshold is not None:  # RSign (ReActNet Eq. 1): sign(x - alpha_c)
            x = x - self.threshold.view(1, -1, 1, 1)
        x = self.input_quantizer(x)
        w = self.quantized_weight()
        padding = self.padding
        if self.pad_value != 0.0 and any(self.padding):
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
            padding = 0
        return F.conv2d(x, w, None, self.stride, padding, self.dilation, self.groups)


def threshold_names(model: nn.Module) -> list[str]:
    """The state-dict names of the learnable thresholds of ``model``'s binary convs (``layer1.0.conv1.threshold``...):
    what a model initialised from a real-valued twin (which has none) starts at 0, ReActNet's initialisation."""
    return [f"{name}.threshold" if name else "threshold" for name, m in model.named_modules()
            if isinstance(m, BinaryConv2d) and m.threshold is not None]


# ----------------------------------------------------------------------------------------------------------
# FTBNN's non-linear modules after the residual addition
# ----------------------------------------------------------------------------------------------------------


class PReLU(nn.PReLU):
    """Channel-wise PReLU (He et al. 2015): ``y = x`` for x >= 0, ``a_c x`` otherwise; ``a_c`` init 0.25."""

    def __init__(self, channels: int):
        super().__init__(num_parameters=channels, init=0.25)


class RPReLU(nn.Module):
    """RPReLU (ReActNet, Liu et al. 2020): ``y = PReLU_c(x - gamma_c) + zeta_c``, shifts initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.prelu = nn.PReLU(channels, init=0.25)
        self.zeta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(x - self.gamma) + self.zeta


class FPReLU(nn.Module):
    """FTBNN's fully parametric ReLU (Su et al. 2020, arXiv 2010.09294): learnable slopes on both sides,
    ``y = a_c x`` for x >= 0 and ``b_c x`` for x < 0, per channel; ``a`` initialised to 1, ``b`` to 0.25.

    The reference marks FTBNN's details as unverified: this follows its description (a channel-wise PReLU with
    learnable slopes on both sides); the initial values are onebit's choice (identity-like on the positive side).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.pos = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.neg = nn.Parameter(torch.full((1, channels, 1, 1), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, self.pos * x, self.neg * x)


NONLINEARITIES = {"none": None, "prelu": PReLU, "rprelu": RPReLU, "fprelu": FPReLU}


def make_nonlinearity(name: str, channels: int) -> nn.Module:
    """The module placed after each residual addition (FTBNN); ``none`` is the identity (Bi-Real)."""
    if name not in NONLINEARITIES:
        raise ValueError(f"model.nonlinearity={name!r} is unknown: choose one of {', '.join(NONLINEARITIES)}")
    cls = NONLINEARITIES[name]
    return nn.Identity() if cls is None else cls(channels)
