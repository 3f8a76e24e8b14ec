"""Binarization components, one small class per paper idea.

Every component is a ``torch.nn.Module`` that declares its ``precision`` (1 or 32 bits). Layers read these
declarations, and the efficiency summary (``onebit.nn.summary``) derives memory and operation counts from them.

Activation sign approximations (Hydra group ``sign``) map an activation tensor to exactly -1/+1 and
back-propagate a pseudo-gradient ``dL/dx = dL/dy * g(x)``:

=============  =====================================================  ============================
class          g(x)                                                   source
=============  =====================================================  ============================
SteSign        ``1{|x| <= t}``                                        Bi-Real (ECCV 2018) Eq. 2
ApproxSign     ``2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), else 0    Bi-Real (ECCV 2018) Eq. 3
SwishSign      ``b (2 - b x tanh(b x / 2)) / (1 + cosh(b x))``        BNN+ (as in larq)
=============  =====================================================  ============================

Every sign approximation takes ``learnable_threshold`` (``sign.learnable_threshold``, default false): true asks the
binary conv that applies it (:class:`onebit.nn.layers.BinaryConv2d`) for ReActNet's learnable per-channel threshold,
``sign(x - alpha_c)`` (RSign, Liu et al. ECCV 2020 Eq. 1-2); the threshold is the layer's parameter, since it has
one value per input channel.

Weight binarizers (Hydra group ``weight``) map a latent conv weight ``W_r`` of shape (out, in, kh, kw) to the
weight used in the forward pass: ``PlainSign`` (Bi-Real Eq. 4), ``MagnitudeAware`` (Bi-Real Eq. 6-7),
``MagnitudeAwareOfficial`` (the official PyTorch code's variant: scaled forward, plain gradient) and
``XnorScaling`` (XNOR-Net's scaled weights with the gradient through the scale, as ablated by Bethge et al. 2018).

Real-valued activations for pretraining the real-valued twin: ``ReLU``, ``Clip`` (hardtanh), ``LeakyClip``.

To add a sign approximation, subclass :class:`SignApproximation`, implement ``derivative(x)`` and add a
YAML file ``conf/sign/<name>.yaml`` with its ``_target_`` (docs/ablations.md; tests/test_architecture.py adds one).

Over 400 lines on purpose: the file is the catalogue of components (larq's quantizers.py), one small class per
paper idea, each with its equation; splitting it would separate the shared autograd helpers from their users.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "binary_sign",
    "Quantizer",
    "SignApproximation",
    "SteSign",
    "ApproxSign",
    "SwishSign",
    "ReLU",
    "Clip",
    "LeakyClip",
    "RealWeight",
    "PlainSign",
    "MagnitudeAware",
    "MagnitudeAwareOfficial",
    "XnorScaling",
]


def _positive(key: str, value, what: str = "must be a positive finite number") -> float:
    """A component's positive, finite parameter, or a one-line ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{key}={value!r} is invalid: {what}")
    return float(value)


# floating-point types narrower than float32 (autocast's, and Lightning's *-true precisions): derivatives of inputs
# of these types are computed in float32 and rounded once to the input's type
_NARROW = (torch.bfloat16, torch.float16)
_SIGNIFICANT_BITS = {torch.bfloat16: 8, torch.float16: 11, torch.float32: 24}


def _wide(x: Tensor) -> Tensor:
    """``x`` as float32 if its type is bf16/fp16 (exact: every bf16/fp16 number is a float32), else ``x`` itself."""
    return x.float() if x.dtype in _NARROW else x


def _at_most(t: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` that is ``<= t`` (``t`` itself for float64): the cut for ``|x| <= t``.

    Comparing a tensor with a Python float rounds the float to the tensor's type *to nearest*: bf16 turns
    ``t = 1.1`` into 1.1015625 (float32 into 1.1000000238), so ``|x| = 1.1015625 > t`` would pass. Comparing with
    the largest representable number ``<= t`` gives exactly ``|x| <= t``. With ``t = m 2^e`` (``math.frexp``):
    keep the type's significant bits of ``m``, rounding down (normal numbers; ``t`` is a threshold near 1).
    """
    bits = _SIGNIFICANT_BITS.get(dtype)
    if bits is None:
        return t
    m, e = math.frexp(t)
    return math.ldexp(math.floor(math.ldexp(m, bits)), e - bits)


def binary_sign(x: Tensor) -> Tensor:
    """Bi-Real Eq. 1: ``sign(x) = +1 if x >= 0 else -1``.

    Unlike ``torch.sign``, zero maps to +1, so the output is always exactly -1 or +1.
    """
    return (x >= 0).to(x.dtype).mul_(2).sub_(1)


class Quantizer(nn.Module):
    """Base of every component: declares the number of bits of what it outputs (1 or 32)."""

    precision: int = 32

    def state_key(self) -> tuple:
        """What the output depends on besides the input: the component's plain settings (``fixed``, ``t``...) and
        the versions of its own parameters and buffers (``onebit.nn.layers.BinaryConv2d`` reuses ``w(W_r)`` in
        inference while this and ``W_r`` are unchanged)."""
        settings = tuple((k, v) for k, v in sorted(vars(self).items())
                         if not k.startswith("_") and isinstance(v, (bool, int, float, str)))
        tensors = tuple((t._version, t.data_ptr()) for t in (*self.parameters(), *self.buffers()))
        return settings + tensors

    def extra_repr(self) -> str:  # pragma: no cover - cosmetic
        return f"precision={self.precision}"


# ----------------------------------------------------------------------------------------------------------
# Activation sign approximations (forward: sign; backward: a pseudo-gradient)
# ----------------------------------------------------------------------------------------------------------


class _SignWithDerivative(torch.autograd.Function):
    """forward: sign(x); backward: ``dL/dy * module.derivative(x)``. Saves x (needed by the formula).

    For a bf16/fp16 x (autocast) the product is computed in float32 from the exact float32 values of x and dL/dy
    and rounded once to x's type. Evaluated in bf16 instead, SwishSign's derivative is off by up to 1% of its peak
    and ``dL/dy * g`` misses the correctly rounded product in most elements (ApproxSign: about 1 in 8)."""

    @staticmethod
    def forward(ctx, x: Tensor, module: "SignApproximation") -> Tensor:
        ctx.module = module
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return (_wide(grad) * ctx.module.derivative(_wide(x))).to(x.dtype), None


class _SignWithMask(torch.autograd.Function):
    """forward: sign(x); backward: ``dL/dy * 1{|x| <= t}``. Saves a 1-byte mask instead of the input.
    Serves the STE on activations and the plain weight update alike. The mask is the exact ``|x| <= t`` in every
    dtype (:func:`_at_most`); ``dL/dy * mask`` needs no rounding."""

    @staticmethod
    def forward(ctx, x: Tensor, t: float) -> Tensor:
        ctx.save_for_backward(x.abs() <= _at_most(t, x.dtype))
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class SignApproximation(Quantizer):
    """An activation binarizer: forward ``sign(x)`` (Bi-Real Eq. 1), backward ``dL/dy * derivative(x)``.

    Subclasses implement :meth:`derivative`, the derivative of the smooth function that approximates sign
    in the backward pass. That is all a new approximation needs.
    """

    precision = 1

    def __init__(self, learnable_threshold: bool = False):
        super().__init__()
        if not isinstance(learnable_threshold, bool):
            raise ValueError(f"sign.learnable_threshold={learnable_threshold!r} is invalid: must be true or false")
        self.learnable_threshold = learnable_threshold  # read by BinaryConv2d: a per-channel threshold (RSign)

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return _SignWithDerivative.apply(x, self)


class SteSign(SignApproximation):
    """Straight-through estimator with gradient cancelling (BinaryNet; Bi-Real ECCV 2018 Eq. 2 baseline).

    forward:  ``y = sign(x)``  (+1 for x >= 0)
    backward: ``dL/dx = dL/dy * 1{|x| <= t}``

    ``t = 1`` is the derivative of ``clip(-1, x, 1)``, the "original" row of Bi-Real Table 1; BinaryDenseNet
    (Back to Simplicity) uses ``t = 1.3``. The boundary ``|x| = t`` passes the gradient, as in larq's
    ``ste_sign`` (``torch.clamp``'s gradient, by contrast, is 0 at the bounds).
    """

    def __init__(self, t: float = 1.0, learnable_threshold: bool = False):
        super().__init__(learnable_threshold)
        self.t = _positive("sign.t", t, "the STE threshold must be a positive finite number")

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() <= self.t).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return _SignWithMask.apply(x, self.t)

    def extra_repr(self) -> str:
        return f"t={self.t}"


class ApproxSign(SignApproximation):
    """ApproxSign, the piecewise-quadratic approximation of sign (Bi-Real ECCV 2018 Eq. 3).

    forward:  ``y = sign(x)``
    backward: ``dL/dx = dL/dy * g(x)``, ``g(x) = 2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere,
    i.e. ``g(x) = max(0, 2 - 2|x|)``, the derivative of
    ``F(x) = -1 (x < -1); 2x + x^2 (-1 <= x < 0); 2x - x^2 (0 <= x < 1); 1 (x >= 1)``.

    ``t`` (optional) multiplies g by the gradient-cancelling mask ``1{|x| <= t}`` of the STE, as in Bethge et
    al. 2018 ("Training Competitive BNNs from Scratch", Eq. 4); with ``t >= 1`` (or null) it changes nothing,
    since g is already 0 outside [-1, 1]. Sharing the STE's field name lets one sweep cross ``sign`` with
    ``sign.t``.
    """

    def __init__(self, t: float | None = None, learnable_threshold: bool = False):
        super().__init__(learnable_threshold)
        if t is not None and not (t > 0 and math.isfinite(t)):
            raise ValueError(f"sign.t={t!r} is invalid: must be null or a positive finite number")
        self.t = None if t is None else float(t)

    def derivative(self, x: Tensor) -> Tensor:
        g = (2 - 2 * x.abs()).clamp_(min=0)
        if self.t is not None and self.t < 1:
            g = g * (x.abs() <= _at_most(self.t, x.dtype))
        return g

    def extra_repr(self) -> str:
        return f"t={self.t}"


class SwishSign(SignApproximation):
    """SwishSign (BNN+, Darabi et al. 2018), as implemented by larq's ``SwishSign``.

    forward:  ``y = sign(x)``
    backward: ``dL/dx = dL/dy * b (2 - b x tanh(b x / 2)) / (1 + cosh(b x))``, ``b = beta`` (default 5),
    the derivative of ``2 sigmoid(b x) (1 + b x (1 - sigmoid(b x))) - 1``.
    """

    def __init__(self, beta: float = 5.0, learnable_threshold: bool = False):
        super().__init__(learnable_threshold)
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"sign.beta={beta!r} is invalid: must be a positive finite number")
        self.beta = float(beta)

    def derivative(self, x: Tensor) -> Tensor:
        bx = self.beta * x
        # 1 + cosh overflows to inf for |bx| > ~710 in float32, which gives the correct limit 0.
        return self.beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


# ----------------------------------------------------------------------------------------------------------
# Real-valued activations (the pretraining activation of the real-valued twin, Bi-Real section 4.1)
# ----------------------------------------------------------------------------------------------------------


class ReLU(Quantizer):
    """``y = max(0, x)``; the "ReLU" initialisation of Bi-Real Table 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


class Clip(Quantizer):
    """``y = clip(-1, x, 1)`` (hardtanh); the "clip" initialisation of Bi-Real Table 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.hardtanh(x)


class LeakyClip(Quantizer):
    """The official README's intermediate activation: identity on [-1, 1], slope ``slope`` (0.1) outside.

    ``y = x`` for ``|x| <= 1``; ``y = sign(x) (1 + slope (|x| - 1))`` otherwise.
    """

    def __init__(self, slope: float = 0.1):
        super().__init__()
        if not (0 <= slope <= 1):
            raise ValueError(f"pretrain.activation.slope={slope!r} is invalid: must be in [0, 1]")
        self.slope = float(slope)

    def forward(self, x: Tensor) -> Tensor:
        clipped = torch.nn.functional.hardtanh(x)
        return clipped + self.slope * (x - clipped)


# ----------------------------------------------------------------------------------------------------------
# Weight binarizers
# ----------------------------------------------------------------------------------------------------------


def filter_scale(w: Tensor) -> Tensor:
    """Bi-Real Eq. 6: one scale per output filter, ``||W_r||_1 / n`` with n = in * kh * kw, shaped (out,1,1,1)."""
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


class RealWeight(Quantizer):
    """Identity: the real-valued twin's conv weight, ``W = W_r`` (32 bit)."""

    def forward(self, w: Tensor) -> Tensor:
        return w


class _ScaledSignFn(torch.autograd.Function):
    """forward: ``scale * sign(W)`` (``sign(W)`` if ``fixed``), scale = per-filter mean|W|; backward:
    ``dL/dW_b * 1{|W| < 1}``, times the scale if ``scale_in_grad`` (no gradient through the scale itself)."""

    @staticmethod
    def forward(ctx, w: Tensor, fixed: bool, scale_in_grad: bool) -> Tensor:
        scale = filter_scale(w)
        ctx.scale_in_grad = scale_in_grad
        ctx.save_for_backward(scale, w.abs() < 1)
        b = binary_sign(w)
        return b if fixed else b.mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scale, mask = ctx.saved_tensors
        return (grad * scale * mask if ctx.scale_in_grad else grad * mask), None, None


class PlainSign(Quantizer):
    """The "original" weight update of Bi-Real Table 1 (Bi-Real ECCV 2018 Eq. 4).

    forward:  ``W_b = sign(W_r)``
    backward: ``dL/dW_r = dL/dW_b * 1{|W_r| <= t}`` (t = 1; BinaryDenseNet uses 1.3 with weight clipping).
    """

    precision = 1

    def __init__(self, t: float = 1.0):
        super().__init__()
        self.t = _positive("weight.t", t)

    def forward(self, w: Tensor) -> Tensor:
        return _SignWithMask.apply(w, self.t)

    def extra_repr(self) -> str:
        return f"t={self.t}"


class MagnitudeAware(Quantizer):
    """The "proposed" magnitude-aware weight update (Bi-Real ECCV 2018 Eq. 6-7), as in larq's
    ``MagnitudeAwareSign``.

    forward:  ``W_b = (||W_r||_1 / n) * sign(W_r)``, one scale per output filter (n = in * kh * kw)
    backward: ``dL/dW_r = dL/dW_b * (||W_r||_1 / n) * 1{|W_r| < 1}`` (Eq. 7: the scale multiplies the
    gradient; no gradient flows through the scale itself).

    The scale exists only during training: after the BN-retraining stage sets ``fixed = True`` the forward
    is ``sign(W_r)`` and BatchNorm absorbs the scale (Bi-Real section 4.1).
    """

    precision = 1

    def __init__(self):
        super().__init__()
        self.fixed = False

    def forward(self, w: Tensor) -> Tensor:
        return _ScaledSignFn.apply(w, self.fixed, True)

    def extra_repr(self) -> str:
        return f"fixed={self.fixed}"


class MagnitudeAwareOfficial(Quantizer):
    """The official Bi-Real PyTorch code's variant (``HardBinaryConv``): scaled forward, plain gradient.

    forward:  ``W_b = detach(||W_r||_1 / n) * sign(W_r)``
    backward: ``dL/dW_r = dL/dW_b * 1{|W_r| < 1}`` (the gradient of ``torch.clamp(W_r, -1.0, 1.0)``, which
    is 0 at the bounds, and no scale)

    This differs from the paper's Eq. 7, whose gradient carries the scale (see :class:`MagnitudeAware`).
    Written as one autograd function; it equals the official idiom
    ``detach(scale * sign(W)) - detach(clamp(W)) + clamp(W)`` exactly (tested).
    """

    precision = 1

    def __init__(self):
        super().__init__()
        self.fixed = False

    def forward(self, w: Tensor) -> Tensor:
        return _ScaledSignFn.apply(w, self.fixed, False)

    def extra_repr(self) -> str:
        return f"fixed={self.fixed}"


class _XnorScalingFn(torch.autograd.Function):
    """See :class:`XnorScaling`. For bf16/fp16 weights the backward is computed in float32 and rounded once."""

    @staticmethod
    def forward(ctx, w: Tensor, t: float, fixed: bool) -> Tensor:
        b = binary_sign(w)
        mask = w.abs() <= _at_most(t, w.dtype)
        if fixed:
            ctx.save_for_backward(mask)
            return b
        alpha = filter_scale(w)
        ctx.save_for_backward(mask, b, alpha)
        return b * alpha

    @staticmethod
    def backward(ctx, grad: Tensor):
        if len(ctx.saved_tensors) == 1:  # fixed: the forward is sign(W_r), its STE gradient
            (mask,) = ctx.saved_tensors
            return grad * mask, None, None
        mask, b, alpha = ctx.saved_tensors
        dtype, grad, b, alpha = grad.dtype, _wide(grad), _wide(b), _wide(alpha)
        dims = tuple(range(1, grad.dim()))
        n = b[0].numel()
        through_scale = (grad * b).sum(dim=dims, keepdim=True) * b / n
        return (grad * alpha * mask + through_scale).to(dtype), None, None


class XnorScaling(Quantizer):
    """XNOR-Net weight scaling with the gradient through the scale (XNOR-Net, Rastegari et al. 2016, section 3.1:
    ``alpha* = ||W||_l1 / n``), the "scaling" axis of Bethge et al. 2018 ("Training Competitive BNNs from
    Scratch", Tables 2-3: scaling = yes; scaling = no is :class:`PlainSign`).

    forward:  ``W_b = alpha * sign(W_r)``, ``alpha = ||W_r||_1 / n`` per output filter (n = in * kh * kw)
    backward: the chain rule through both factors of ``W_b = alpha(W_r) * s(W_r)``, with the STE pseudo-gradient
    ``ds_j/dW_j = 1{|W_j| <= t}`` (t = 1) and ``d alpha / dW_j = sign(W_j) / n``:

        ``dL/dW_j = g_j * alpha * 1{|W_j| <= t}  +  (sign(W_j) / n) * sum_k g_k * sign(W_k)``

    with ``g = dL/dW_b`` and the sum over the output filter of ``W_j``; ``sign(0) = +1`` in both terms (the
    subgradient of ``|W|`` at 0 is taken as +1, consistent with Bi-Real Eq. 1).

    Unlike :class:`MagnitudeAware` (Bi-Real Eq. 6-7: no gradient through the scale, mask ``|W_r| < 1``) the scale
    here is a differentiable function of the weights, as when XNOR-Net's alpha is written with ordinary tensor
    ops in a framework's autograd. This is the exact chain rule, including the cross term over the filter (the
    XNOR-Net paper writes an element-wise simplification, ``g_j (1/n + alpha 1{|W_j| <= 1})``).

    ``fixed = True`` (set by BN retraining) drops the scale: forward ``sign(W_r)``, backward ``g * 1{|W_r| <= t}``.
    """

    precision = 1

    def __init__(self, t: float = 1.0):
        super().__init__()
        self.t = _positive("weight.t", t)
        self.fixed = False

    def forward(self, w: Tensor) -> Tensor:
        return _XnorScalingFn.apply(w, self.t, self.fixed)

    def extra_repr(self) -> str:
        return f"t={self.t}, fixed={self.fixed}"
