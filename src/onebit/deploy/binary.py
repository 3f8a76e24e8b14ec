"""What a binary conv computes once deployed, read off the PyTorch layer: the sign of its input (:func:`is_sign`,
larq's :func:`ste_sign`, which LCE turns into ``LceQuantize``), its learnable per-channel input threshold
(:func:`input_threshold`) and its 1-bit kernel with one scale per output channel (:func:`binary_kernel`).
:mod:`onebit.deploy.graph` builds the Keras graph from these."""

from __future__ import annotations

import numpy as np
import torch

from onebit.deploy.extra import ExportError
from onebit.nn.quantizers import Quantizer, binary_sign


def ste_sign(t):
    """larq's ``ste_sign`` forward, ``sign(sign(x) + 0.1)`` (+1 at 0, Bi-Real Eq. 1): the pattern LCE's converter
    turns into ``LceQuantize`` (bit-packing) feeding ``LceBconv2d``."""
    import tensorflow as tf

    return tf.sign(tf.sign(t) + 0.1)



def is_sign(component: Quantizer) -> bool:
    """True if ``component`` computes Bi-Real Eq. 1 ``sign(x)`` (+1 at 0) in inference: checked on a probe that
    holds 0, +-tiny, +-1 and ordinary values, in eval mode without gradient."""
    probe = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0])
    was = component.training
    try:
        with torch.no_grad():
            out = component.eval()(probe)
    finally:
        component.train(was)
    return out.shape == probe.shape and torch.equal(out, binary_sign(probe))


def binary_kernel(conv, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(sign(W), alpha)`` of a binary conv whose weight component gives ``alpha_o sign(W)`` (``alpha_o > 0`` per
    output channel, exactly equal within a channel); :class:`ExportError` otherwise. ``sign(W)`` is (O, I, kh, kw)
    of +-1, ``alpha`` (O,)."""
    with torch.no_grad():
        w = conv.weight_quantizer(conv.weight.detach()).float()
    alpha = w.abs().amax(dim=tuple(range(1, w.dim())))
    if not bool((alpha > 0).all()) or not torch.equal(w.abs(), alpha.view(-1, *[1] * (w.dim() - 1)).expand_as(w)):
        raise ExportError(f"layer {name}: its weight component {type(conv.weight_quantizer).__name__} does not give "
                          "one +-alpha per output channel, so it has no 1-bit equivalent")
    return (w / alpha.view(-1, *[1] * (w.dim() - 1))).numpy(), alpha.numpy()


def input_threshold(conv) -> np.ndarray | None:
    """The learnable per-channel threshold ``alpha`` of a binary conv's input (ReActNet's RSign, Liu et al. ECCV 2020
    Eq. 1: ``x_b = sign(x - alpha_c)``; ``sign.learnable_threshold=true``) as float32 (I,), or None without one.
    Deployed as the same float32 subtraction ``x - alpha_c`` right before the sign, so the binarized input is
    PyTorch's bit for bit (where LCE's converter keeps the subtraction as it is)."""
    threshold = getattr(conv, "threshold", None)
    return None if threshold is None else threshold.detach().float().cpu().numpy()
