"""Export a trained binary network as a real 1-bit model: a Larq Compute Engine (LCE) TFLite flatbuffer.

In PyTorch a binary net is stored and run in float (32 bits per weight, float convolutions). LCE (Bannink et al.
2021, "Larq Compute Engine: design, benchmark and deploy state-of-the-art binarized neural networks") converts a
Keras graph into a TFLite model whose binary convolutions are ``LceBconv2d`` ops on bit-packed weights (1
bit each) fed by ``LceQuantize`` (the sign of the input, packed 32 to a word): Bi-Real Table 3's memory saving
made real. This module builds that graph from onebit's own module tree, layer for layer:

- a :class:`~onebit.layers.BinaryConv2d` becomes what ``larq.layers.QuantConv2D(input_quantizer="ste_sign",
  kernel_quantizer="ste_sign")`` computes in inference: larq's ``ste_sign`` forward ``sign(sign(x) + 0.1)`` on the
  input (:func:`ste_sign`, which LCE's converter turns into ``LceQuantize``), then a conv with the constant kernel
  ``sign(W_r)`` (which it turns into ``LceBconv2d``). larq itself is not needed (it pins numpy < 2). The input
  component must compute Bi-Real Eq. 1, ``sign(x) = +1 if x >= 0 else -1``, in inference (every sign
  approximation does: they differ only in the backward pass), as ``ste_sign`` does. Its weight component must
  give ``alpha_o sign(W_r)`` with one ``alpha_o > 0`` per output channel (plain sign: ``alpha_o = 1``;
  magnitude-aware, Bi-Real Eq. 6, and XNOR scaling: ``alpha_o = ||W_r,o||_1 / n``). Checked on the layer's
  actual weights, not on its class name.
- the scale goes into the BatchNorm that follows (Bi-Real section 4.1: "the scaling factor can be absorbed into
  the BatchNorm"): ``BN(alpha c) = gamma (alpha c - mu) / sqrt(var + eps) + beta = gamma' (c - mu') + beta`` with
  ``gamma' = gamma alpha / sqrt(var + eps)``, ``mu' = mu / alpha``, written as a Keras BatchNorm of variance
  ``1 - eps``; exact up to float rounding. Without a BatchNorm after it (BinaryDenseNet) the scale is a
  per-channel multiplication, which LCE fuses into the convolution's output transform likewise.
- padding: PyTorch pads a stride-2 3x3 convolution symmetrically (1 and 1), TensorFlow's ``"same"`` on an even
  size pads 0 before and 1 after, a different function (larq-zoo's Bi-Real uses TF's alignment; onebit follows
  the official PyTorch code). :func:`same_extension` finds ``e`` such that TF's ``"same"`` on the input extended
  by ``e`` rows/columns (after; never read by the kept outputs) pads exactly PyTorch's ``p`` before; the extra
  output rows are cropped. The binarized input is padded with ``pad_value`` (0: the paper's ternary border, or
  +1; -1 has no LCE kernel and is refused). Real convolutions use the same construction (explicit padding and a
  "valid" conv would be simpler, but the converter fuses that pair into a "same" conv, TF's alignment, wrongly).
- everything else maps one to one (BatchNorm, max/average pooling with PyTorch's windows, PReLU/RPReLU/FPReLU,
  the parameter-free channel shortcuts, concatenation, global average pooling, the FC).

The module is imported only by ``src/export.py`` and ``analysis/tables.py efficiency --measured``: it needs the
optional extra ``pip install -e '.[export]'`` (larq-compute-engine, tensorflow-cpu, tf-keras).

LCE 0.16 defects this module works around (found by the tests, each exact): its optimised binary kernels compute
zero padding wrongly when the input is smaller than the kernel (a 1x1 or 2x2 map under a 3x3 conv; its reference
kernel is right), so there the conv pads with +1 and subtracts what the +1s added (:meth:`KerasGraph.
_one_padding_excess`); and its converter folds any constant added after a conv into the conv's per-channel bias,
also a per-position map, which the interpreter then rejects, so that subtraction follows a ``max(t, lowest)``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning  # noqa: F401  torchvision's C++ ops (imported by Lightning and onebit's models) crash with
import torch
import torchvision  # noqa: F401  a segmentation fault when they load after tensorflow's: load them first, here
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from onebit.core.errors import ConfigError, config_error
from onebit.core.files import atomic_write
from onebit.nn.layers import FPReLU, RPReLU
from onebit.nn.models import BinaryDenseNet, BiRealResNet
from onebit.nn.quantizers import Clip, LeakyClip, Quantizer, RealWeight, binary_sign
from onebit.nn.quantizers import ReLU as ReLUActivation
from onebit.nn.summary import summarize
from onebit.training.build import make_model
from onebit.training.checkpoints import find_weights, model_from_record

EXTRA = "export"
REQUIRED_MODULES = ("larq_compute_engine", "tensorflow", "tf_keras")
AGREEMENT_MIN = 0.999  # the share of test images whose top-1 class must equal PyTorch's
MODEL_NAME, TWIN_NAME = "model.tflite", "twin.tflite"

# LCE's converter takes Keras 2 models (tf_keras): tensorflow reads this when it is first imported, which another
# library (Lightning, TensorBoard) may do before this module builds a graph
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class ExportError(ConfigError):
    """A model or layer that has no exact 1-bit LCE equivalent: one line naming the layer and why."""


def missing_modules() -> list[str]:
    """What the ``export`` extra provides and this environment lacks, without importing any of it: its modules,
    and numpy < 2 (LCE 0.16's interpreter reads arrays through numpy 1's ABI: under numpy 2 every input is 0
    bytes)."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if int(np.__version__.split(".")[0]) >= 2:
        missing.append(f"numpy<2 (found {np.__version__})")
    return missing


def require_extra() -> None:
    missing = missing_modules()
    if missing:
        raise ConfigError(f"export needs the optional extra: pip install -e '.[{EXTRA}]' (missing: "
                          f"{', '.join(missing)})")


def _tf():
    """tensorflow and tf_keras (Keras 2, which LCE's converter takes), imported quietly."""
    import tensorflow as tf
    import tf_keras

    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras


# ----------------------------------------------------------------------------------------------------------
# Padding: PyTorch's symmetric windows with TensorFlow's "same"
# ----------------------------------------------------------------------------------------------------------


def torch_out(n: int, k: int, s: int, p: int, ceil_mode: bool = False) -> int:
    """PyTorch's output size of a conv/pool along one axis (``torch.nn.Conv2d`` / ``MaxPool2d`` docs):
    ``floor((n + 2p - k) / s) + 1``; with ``ceil_mode`` the ceiling, minus one if the last window would start in
    the right padding."""
    if not ceil_mode:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def same_extension(n: int, k: int, s: int, p: int, ceil_mode: bool = False, zeros_are_padding: bool = False
                   ) -> int | None:
    """The number ``e`` of rows to append to an axis of size ``n`` so that TensorFlow's ``"same"`` windows over
    ``n + e`` start exactly where PyTorch's do (padding ``p`` before) and the first ``torch_out`` outputs never
    read an appended row; ``None`` if there is none.

    TF ``"same"``: ``out' = ceil(n' / s)``, total padding ``P = max((out' - 1) s + k - n', 0)``, ``floor(P / 2)``
    of it before. The kept outputs' last window ends at ``(out - 1) s - p + k - 1``; appended rows (``e > 0``)
    must lie beyond it, so that they stand only where PyTorch pads too (or nowhere read). With
    ``zeros_are_padding`` (a real convolution: appended zero rows are what PyTorch's zero padding reads anyway) they
    may be read."""
    out = torch_out(n, k, s, p, ceil_mode)
    last = (out - 1) * s - p + k - 1
    for e in range(s + 1):
        m = n + e
        out2 = -(-m // s)
        before = max((out2 - 1) * s + k - m, 0) // 2
        if before == p and out2 >= out and (e == 0 or last <= n - 1 or zeros_are_padding):
            return e
    return None


def same_padding(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's ``"same"`` padding (before, after) of an axis of size ``n``."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def ste_sign(t):
    """larq's ``ste_sign`` forward, ``sign(sign(x) + 0.1)`` (+1 at 0, Bi-Real Eq. 1): the pattern LCE's converter
    turns into ``LceQuantize`` (bit-packing) feeding ``LceBconv2d``."""
    import tensorflow as tf

    return tf.sign(tf.sign(t) + 0.1)


# ----------------------------------------------------------------------------------------------------------
# Binary layers: what the deployed model computes
# ----------------------------------------------------------------------------------------------------------


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


@dataclass
class BuildInfo:
    """What the graph builder did: binary convolutions, how many weights are 1 bit, how many scales were folded."""

    binary_convs: int = 0
    binary_weights: int = 0
    folded_scales: int = 0
    multiplied_scales: int = 0


class KerasGraph:
    """Builds the tf_keras functional graph of a onebit model, NHWC, weights copied from the PyTorch modules.

    ``binary=True``: binary convs become ``ste_sign`` + a conv with a +-1 kernel (1-bit in LCE). ``binary=False``:
    the real-valued twin (its activations and real weights) as float ``Conv2D``, for the float TFLite baseline.
    Each PyTorch module type has one method in :attr:`HANDLERS`; a type without one is refused, naming the layer.
    """

    def __init__(self, binary: bool):
        self.tf, self.keras = _tf()
        self.binary = binary
        self.info = BuildInfo()
        self._n = 0

    # -- entry ---------------------------------------------------------------------------------------------
    def build(self, model: nn.Module, input_size: tuple[int, int, int]):
        c, h, w = input_size
        inputs = self.keras.Input((h, w, c), batch_size=1, name="image")
        model = model.eval()
        if isinstance(model, BiRealResNet):
            x = self.module(inputs, model.conv1, "conv1")
            x = self.module(x, model.bn1, "bn1")
            x = self.module(x, model.maxpool, "maxpool")
            for i in range(1, 5):
                x = self.module(x, getattr(model, f"layer{i}"), f"layer{i}")
        elif isinstance(model, BinaryDenseNet):
            x = self.module(inputs, model.stem, "stem")
            x = self.module(x, model.features, "features")
            x = self.module(x, model.head_bn, "head_bn")
            x = self.keras.layers.ReLU()(x)
        else:
            raise ExportError(f"model {type(model).__name__} cannot be exported; supported: BiRealResNet (Bi-Real, "
                              "Res and Plain ResNets of every depth), BinaryDenseNet")
        x = self.keras.layers.GlobalAveragePooling2D()(x)
        x = self.module(x, model.fc, "fc")
        return self.keras.Model(inputs, x)

    def module(self, x, m: nn.Module, name: str):
        for cls in type(m).__mro__:
            handler = self.HANDLERS.get(cls.__name__)
            if handler is not None:
                return getattr(self, handler)(x, m, name)
        raise ExportError(f"layer {name} ({type(m).__name__}) has no LCE equivalent in onebit's exporter; supported: "
                          f"{', '.join(sorted(self.HANDLERS))}")

    HANDLERS = {
        "Sequential": "sequential", "Identity": "identity", "BinaryBlock": "binary_block",
        "DenseLayer": "dense_layer", "ChannelShortcut": "channel_shortcut", "BinaryConv2d": "binary_conv",
        "Conv2d": "conv", "BatchNorm2d": "batchnorm", "MaxPool2d": "pool", "AvgPool2d": "pool",
        "ReLU": "relu", "PReLU": "prelu", "RPReLU": "rprelu", "FPReLU": "fprelu", "Linear": "linear",
    }

    # -- containers ----------------------------------------------------------------------------------------
    def sequential(self, x, m: nn.Sequential, name: str):
        children = list(m.named_children())
        i = 0
        while i < len(children):
            key, child = children[i]
            nxt = children[i + 1][1] if i + 1 < len(children) else None
            if type(child).__name__ == "BinaryConv2d" and isinstance(nxt, nn.BatchNorm2d):
                x = self.binary_conv(x, child, f"{name}.{key}", bn=nxt)
                i += 2
            else:
                x = self.module(x, child, f"{name}.{key}")
                i += 1
        return x

    def identity(self, x, m, name):
        return x

    def binary_block(self, x, m, name: str):
        """``onebit.nn.models.resnet.BinaryBlock``: ``N(BN_k(conv_k(... BN_1(conv_1(x)))) + shortcut(x))``."""
        out = x
        for i in range(1, m.depth + 1):
            out = self.binary_conv(out, getattr(m, f"conv{i}"), f"{name}.conv{i}", bn=getattr(m, f"bn{i}"))
        if m.downsample is not None:
            out = self.keras.layers.Add()([out, self.module(x, m.downsample, f"{name}.downsample")])
        return self.module(out, m.nonlinearity, f"{name}.nonlinearity")

    def dense_layer(self, x, m, name: str):
        """``onebit.nn.models.densenet.DenseLayer``: ``concat(x, conv(Sign(BN(x))))``."""
        y = self.binary_conv(self.batchnorm(x, m.bn, f"{name}.bn"), m.conv, f"{name}.conv")
        return self.keras.layers.Concatenate()([x, y])

    def channel_shortcut(self, x, m, name: str):
        """``onebit.nn.models.resnet.ChannelShortcut``: pool, then the mean of consecutive channel groups (reduce) or
        each channel repeated (expand); NHWC keeps PyTorch's channel order (channel ``o g + j``)."""
        tf = self.tf
        x = self.module(x, m.pool, f"{name}.pool")
        if m.out_channels < m.in_channels:
            g = m.in_channels // m.out_channels
            return self.keras.layers.Lambda(
                lambda t: tf.reduce_mean(tf.reshape(t, (-1, t.shape[1], t.shape[2], m.out_channels, g)), axis=-1))(x)
        if m.out_channels > m.in_channels:
            r = m.out_channels // m.in_channels
            return self.keras.layers.Lambda(lambda t: tf.repeat(t, r, axis=-1))(x)
        return x

    # -- convolutions --------------------------------------------------------------------------------------
    def binary_conv(self, x, conv, name: str, bn: nn.BatchNorm2d | None = None):
        """A :class:`~onebit.layers.BinaryConv2d`, and the BatchNorm after it (which absorbs the weight scale)."""
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ExportError(f"layer {name}: groups={conv.groups}, dilation={tuple(conv.dilation)} are not exported "
                              "(only groups=1, dilation=1)")
        if not self.binary:
            return self._twin_conv(x, conv, name, bn)
        if conv.input_precision != 1 or not is_sign(conv.input_quantizer):
            raise ExportError(f"layer {name}: its input component {type(conv.input_quantizer).__name__} is not the "
                              "sign in inference (a real-valued input, A32), so the layer is not 1-bit")
        if conv.pad_value not in (0.0, 1.0) and any(conv.padding):
            raise ExportError(f"layer {name}: pad_value={conv.pad_value:g} has no LCE kernel; valid: 0, 1")
        signs, alpha = binary_kernel(conv, name)
        kernel = np.ascontiguousarray(signs.transpose(2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        extend, crop = self._same(x, (kh, kw), (sh, sw), (ph, pw), name)
        pad_value, correction = conv.pad_value, None
        if pad_value == 0.0 and (ph or pw) and (x.shape[1] < kh or x.shape[2] < kw):
            # LCE 0.16's optimised kernels compute zero padding wrongly when the input is smaller than the kernel
            # (its reference kernel is right): pad with +1 there and subtract what the +1s added, exactly
            pad_value, correction = 1.0, self._one_padding_excess(signs, x.shape[1], x.shape[2], conv)
        if any(extend):
            x = self.keras.layers.ZeroPadding2D(((0, extend[0]), (0, extend[1])))(x)
        x = self.keras.layers.Lambda(ste_sign, name=self._name("sign"))(x)
        padding = "same" if (ph or pw) else "valid"
        if padding == "same" and pad_value != 0.0:  # as larq's QuantConv2D(pad_values=1): pad by "same"'s
            amounts = [same_padding(n, k, st) for n, k, st in zip(x.shape[1:3], (kh, kw), (sh, sw))]  # amounts
            x = self.keras.layers.Lambda(lambda t, a=amounts, v=pad_value: self.tf.pad(
                t, [[0, 0], list(a[0]), list(a[1]), [0, 0]], constant_values=v))(x)
            padding = "valid"
        layer = self.keras.layers.Conv2D(conv.out_channels, (kh, kw), strides=(sh, sw), padding=padding,
                                         use_bias=False, name=self._name("bconv"))
        y = layer(x)
        layer.set_weights([kernel])
        self.info.binary_convs += 1
        self.info.binary_weights += int(signs.size)
        y = self._crop(y, crop)
        if correction is not None:
            # max(t, lowest) = t: keeps LCE's converter from fusing the subtraction into the conv's per-channel
            # output transform, which it would do wrongly for this per-position map
            lowest = np.float32(np.finfo(np.float32).min)
            y = self.keras.layers.Lambda(lambda t, k=correction: self.tf.maximum(t, lowest) - k)(y)
        scaled = not np.all(alpha == 1.0)
        if bn is not None:
            y = self.batchnorm(y, bn, f"{name} BN", scale=alpha if scaled else None)
            self.info.folded_scales += int(scaled)
        elif scaled:
            y = self.keras.layers.Lambda(lambda t, a=alpha.astype(np.float32): t * a)(y)
            self.info.multiplied_scales += 1
        return y

    @staticmethod
    def _one_padding_excess(signs: np.ndarray, h: int, w: int, conv) -> np.ndarray:
        """``conv(pad_+1(s)) - conv(pad_0(s))`` for a binarized input ``s``: the taps that fall on the padding,
        ``sum W`` over them, the same for every input (the conv of a map that is 1 on the padding and 0 inside).
        Shape (1, H_out, W_out, O) in PyTorch's output geometry."""
        (ph, pw), stride = conv.padding, conv.stride
        ones = torch.nn.functional.pad(torch.zeros(1, signs.shape[1], h, w), (pw, pw, ph, ph), value=1.0)
        excess = torch.nn.functional.conv2d(ones.double(), torch.from_numpy(signs).double(), stride=stride)
        return excess.permute(0, 2, 3, 1).float().numpy()

    def _twin_conv(self, x, conv, name, bn):
        """The real-valued twin's conv: its activation, then a float conv of its real weights."""
        act = conv.input_quantizer
        if isinstance(act, ReLUActivation):
            x = self.keras.layers.ReLU()(x)
        elif isinstance(act, (Clip, LeakyClip)):
            slope = act.slope if isinstance(act, LeakyClip) else 0.0
            x = self.keras.layers.Lambda(
                lambda t: (c := self.tf.clip_by_value(t, -1.0, 1.0)) + slope * (t - c))(x)
        elif not (type(act) is Quantizer or isinstance(act, nn.Identity)):
            raise ExportError(f"layer {name}: twin activation {type(act).__name__} is not exported; supported: "
                              "ReLU, Clip, LeakyClip")
        if not isinstance(conv.weight_quantizer, RealWeight):
            raise ExportError(f"layer {name}: the twin has weight component {type(conv.weight_quantizer).__name__}, "
                              "not real weights")
        if conv.pad_value != 0.0 and any(conv.padding):
            raise ExportError(f"layer {name}: twin pad_value={conv.pad_value:g} is not exported (only 0)")
        y = self.conv(x, conv, name)
        return self.batchnorm(y, bn, f"{name} BN") if bn is not None else y

    def conv(self, x, conv: nn.Conv2d, name: str):
        """A real convolution with PyTorch's zero padding: TF's ``"same"`` on the input extended by zero rows (which
        are zero padding too), cropped. Not explicit padding and a ``"valid"`` conv: TFLite's converter fuses that
        pair into a ``"same"`` conv even where TF's padding is not PyTorch's (a stride-2 conv on an even size)."""
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
            raise ExportError(f"layer {name}: only groups=1, dilation=1, zero padding are exported")
        padded = any(conv.padding)
        extend, crop = (self._same(x, conv.kernel_size, conv.stride, conv.padding, name, zeros_are_padding=True)
                        if padded else ((0, 0), (0, 0)))
        if any(extend):
            x = self.keras.layers.ZeroPadding2D(((0, extend[0]), (0, extend[1])))(x)
        layer = self.keras.layers.Conv2D(conv.out_channels, conv.kernel_size, strides=conv.stride,
                                         padding="same" if padded else "valid", use_bias=conv.bias is not None,
                                         name=self._name("conv"))
        y = layer(x)
        kernel = conv.weight.detach().float().numpy().transpose(2, 3, 1, 0)
        layer.set_weights([kernel] + ([conv.bias.detach().float().numpy()] if conv.bias is not None else []))
        return self._crop(y, crop)

    def batchnorm(self, x, bn: nn.BatchNorm2d, name: str, scale: np.ndarray | None = None):
        """Inference BatchNorm ``gamma (x - mu) / sqrt(var + eps) + beta``; with ``scale`` (a folded weight scale
        ``alpha``) the BatchNorm of ``alpha x``: ``gamma alpha / sqrt(var + eps) (x - mu / alpha) + beta``."""
        if bn.running_mean is None:
            raise ExportError(f"layer {name}: BatchNorm without running statistics cannot be exported")
        c = bn.num_features
        gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(c)
        beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(c)
        mu, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
        eps = float(bn.eps)
        if scale is not None:
            a = scale.astype(np.float64)
            gamma, mu, var = gamma * a / np.sqrt(var + eps), mu / a, np.full(c, 1.0 - eps)
        layer = self.keras.layers.BatchNormalization(epsilon=eps, name=self._name("bn"))
        y = layer(x)
        layer.set_weights([v.astype(np.float32) for v in (gamma, beta, mu, var)])
        return y

    # -- pooling, activations, head ------------------------------------------------------------------------
    def pool(self, x, m, name: str):
        """Max pooling (PyTorch pads with -inf, TF's "same" ignores its padding) and average pooling without
        counting padding (``count_include_pad=False``, or no padding), with PyTorch's windows."""
        k, s, p = (_pair(getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
        is_max = isinstance(m, nn.MaxPool2d)
        if is_max and _pair(m.dilation) != (1, 1):
            raise ExportError(f"layer {name}: dilated max pooling is not exported")
        if not is_max and m.count_include_pad and any(p):
            raise ExportError(f"layer {name}: average pooling that counts its padding is not exported")
        if not any(p) and not m.ceil_mode:
            extend, crop, padding = (0, 0), (0, 0), "valid"
        else:
            (extend, crop), padding = self._same(x, k, s, p, name, m.ceil_mode), "same"
        if any(extend):
            x = self.keras.layers.ZeroPadding2D(((0, extend[0]), (0, extend[1])))(x)
        layer = self.keras.layers.MaxPool2D if is_max else self.keras.layers.AveragePooling2D
        return self._crop(layer(k, s, padding=padding)(x), crop)

    def relu(self, x, m, name):
        return self.keras.layers.ReLU()(x)

    def prelu(self, x, m, name: str):
        """Channel-wise PReLU ``max(0, x) + a_c min(0, x)``."""
        if m.num_parameters == 1:
            a = np.full((1, 1, x.shape[-1]), float(m.weight.detach()[0]), np.float32)
        else:
            a = m.weight.detach().float().numpy().reshape(1, 1, -1)
        layer = self.keras.layers.PReLU(shared_axes=[1, 2], name=self._name("prelu"))
        y = layer(x)
        layer.set_weights([a])
        return y

    def rprelu(self, x, m: RPReLU, name: str):
        """``PReLU_c(x - gamma_c) + zeta_c``."""
        gamma, zeta = (v.detach().float().numpy().reshape(-1) for v in (m.gamma, m.zeta))
        x = self.keras.layers.Lambda(lambda t: t - gamma)(x)
        return self.keras.layers.Lambda(lambda t: t + zeta)(self.prelu(x, m.prelu, name))

    def fprelu(self, x, m: FPReLU, name: str):
        """``a_c x`` for x >= 0, ``b_c x`` otherwise."""
        pos, neg = (v.detach().float().numpy().reshape(-1) for v in (m.pos, m.neg))
        return self.keras.layers.Lambda(lambda t: self.tf.where(t >= 0, pos * t, neg * t))(x)

    def linear(self, x, m: nn.Linear, name: str):
        layer = self.keras.layers.Dense(m.out_features, use_bias=m.bias is not None, name=self._name("fc"))
        y = layer(x)
        layer.set_weights([m.weight.detach().float().numpy().T]
                          + ([m.bias.detach().float().numpy()] if m.bias is not None else []))
        return y

    # -- helpers -------------------------------------------------------------------------------------------
    def _same(self, x, k, s, p, name, ceil_mode=False, zeros_are_padding=False):
        """Per axis: rows to append before a TF ``"same"`` op, and output rows to crop after it."""
        extend, crop = [], []
        for n, kk, ss, pp in zip(x.shape[1:3], k, s, p):
            e = same_extension(n, kk, ss, pp, ceil_mode, zeros_are_padding)
            if e is None:
                raise ExportError(f"layer {name}: kernel {kk}, stride {ss}, padding {pp} on size {n} has no exact "
                                  "TensorFlow 'same' equivalent")
            extend.append(e)
            crop.append(-(-(n + e) // ss) - torch_out(n, kk, ss, pp, ceil_mode))
        return tuple(extend), tuple(crop)

    def _crop(self, y, crop):
        if any(crop):
            y = self.keras.layers.Cropping2D(((0, crop[0]), (0, crop[1])))(y)
        return y

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._n}"


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# ----------------------------------------------------------------------------------------------------------
# Conversion, verification, measurement
# ----------------------------------------------------------------------------------------------------------


def convert(model: nn.Module, input_size: tuple[int, int, int], binary: bool = True) -> tuple[bytes, BuildInfo]:
    """The LCE flatbuffer of ``model`` (``binary=False``: the float graph of a real-valued twin)."""
    import larq_compute_engine as lce

    graph = KerasGraph(binary)
    keras_model = graph.build(model, input_size)
    with warnings.catch_warnings():
        # LCE first tries a SavedModel export, which the Lambda layers (constants captured in Python closures) do
        # not survive, then converts the traced graph itself: the same model, checked by export_run
        warnings.filterwarnings("ignore", message="Saved-model conversion failed")
        return lce.convert_keras_model(keras_model), graph.info


def operators(flatbuffer: bytes) -> dict[str, int]:
    """How many of each operator the TFLite model runs (``LceBconv2d``, ``LceQuantize``, ``CONV_2D``...)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        codes.append(custom.decode() if custom else builtin.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()),
                                                                 "?"))
    counts: dict[str, int] = {}
    graph = model.Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        name = codes[graph.Operators(i).OpcodeIndex()]
        counts[name] = counts.get(name, 0) + 1
    return counts


# LCE's interpreter settings for the check and the timings: its indirect binary GEMM (several times faster than
# the default im2col one on x86 in a one-off comparison, same outputs: tests/test_export.py runs every kernel) and
# XNNPACK for the float ops
INTERPRETER = {"use_indirect_bgemm": True, "use_xnnpack": True}


def interpreter(flatbuffer: bytes, threads: int = 1, **settings):
    """LCE's TFLite interpreter for ``flatbuffer`` (:data:`INTERPRETER` unless ``settings`` say otherwise)."""
    import logging

    from larq_compute_engine.tflite.python.interpreter import Interpreter

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return Interpreter(flatbuffer, num_threads=threads, **{**INTERPRETER, **settings})


def predict(interp, images: np.ndarray) -> np.ndarray:
    """The TFLite model's outputs for NHWC ``images``, one at a time (the model's batch size is 1), as (N, K)."""
    return np.concatenate([np.asarray(interp.predict(np.ascontiguousarray(img[None], dtype=np.float32)))
                           .reshape(1, -1) for img in images])


def compare(model: nn.Module, flatbuffer: bytes, batches) -> dict:
    """Run every image of ``batches`` ((x, y) in NCHW) through the PyTorch model (eval) and the TFLite model:
    top-1 agreement, the share of images whose logits are equal within 1e-3 (relative to the largest, at least 1),
    the largest absolute logit difference, and each one's top-1 accuracy. Logits differ where float rounding
    (BatchNorm folded into LCE's output transform, another summation order) moves a pre-sign value across 0."""
    interp = interpreter(flatbuffer, threads=max(1, torch.get_num_threads()))
    n = agree = close = correct_torch = correct_lite = 0
    max_diff = 0.0
    model.eval()
    with torch.inference_mode():
        for x, y in batches:
            ours = model(x).float().numpy()
            lite = predict(interp, x.permute(0, 2, 3, 1).numpy())
            a, b = ours.argmax(1), lite.argmax(1)
            diff = np.abs(ours - lite).max(axis=1)
            close += int((diff <= 1e-3 * np.maximum(1.0, np.abs(ours).max(axis=1))).sum())
            n += len(y)
            agree += int((a == b).sum())
            correct_torch += int((a == y.numpy()).sum())
            correct_lite += int((b == y.numpy()).sum())
            max_diff = max(max_diff, float(diff.max()))
    return {"n": n, "agreement": agree / n, "equal_logits": close / n, "max_logit_diff": max_diff,
            "top1_torch": correct_torch / n, "top1_tflite": correct_lite / n}


def latency_ms(fn, min_runs: int = 20, min_seconds: float = 1.0) -> float:
    """Median wall time of ``fn()`` in ms, after 3 warm-up calls, over at least ``min_runs`` calls and
    ``min_seconds``."""
    for _ in range(3):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure_latency(binary: nn.Module, twin: nn.Module, model_fb: bytes, twin_fb: bytes,
                    input_size: tuple[int, int, int], threads: int) -> dict:
    """Batch-1 latency (ms, median) of the LCE model, the float TFLite twin, and both PyTorch models (eval,
    inference mode), each with ``threads`` threads, on this machine."""
    x = torch.randn(1, *input_size)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    lite, lite_twin = interpreter(model_fb, threads), interpreter(twin_fb, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            binary.eval(), twin.eval()
            out = {"lce_binary": latency_ms(lambda: lite.predict(x_nhwc)),
                   "tflite_twin": latency_ms(lambda: lite_twin.predict(x_nhwc)),
                   "torch_binary": latency_ms(lambda: binary(x)),
                   "torch_twin": latency_ms(lambda: twin(x))}
    finally:
        torch.set_num_threads(previous)
    return {k: round(v, 3) for k, v in out.items()}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("larq-compute-engine", "tensorflow-cpu", "tf-keras", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def counted_bytes(memory_mbit: float) -> float:
    """onebit's memory count (1 bit per binary weight, 32 per real parameter; Bi-Real section 4.4) in bytes."""
    return memory_mbit * 1e6 / 8




# ----------------------------------------------------------------------------------------------------------
# A finished run -> model.tflite beside it, verified, measured and recorded
# ----------------------------------------------------------------------------------------------------------


def exportable_stage(record) -> str:
    """The run's final stage if it is finished and trained a binary model (1-bit activations and weights); one
    ConfigError line otherwise."""
    final = record.final_stage
    if final is None:
        raise ConfigError(f"run {record.run_dir} has no stages")
    stages = ", ".join(f"{n} {s.status}" for n, s in record.stages.items())
    if not final.finished:
        raise ConfigError(f"run {record.run_dir} has no finished binary stage to export: its final stage "
                          f"{final.name!r} is {final.status} (stages: {stages})")
    bits = final.efficiency or record.efficiency or {}
    if final.model != "binary" or bits.get("activations") != 1 or bits.get("weights") != 1:
        kind = f"A{bits.get('activations', '?')}/W{bits.get('weights', '?')}"
        raise ConfigError(f"run {record.run_dir}: its final stage {final.name!r} trained a {final.model} model "
                          f"({kind}), not a binary one (A1/W1): nothing 1-bit to export")
    return final.name


def twin_model(record, binary: nn.Module):
    """The real-valued twin for the float baseline: the run's finished twin stage with its weights (pretraining),
    else the twin architecture with the binary model's latent weights (``weights`` says which)."""
    for name, st in record.stages.items():
        if st.model == "twin" and st.finished and find_weights(record, name) is not None:
            return model_from_record(record, name), f"stage {name}"
    cfg = OmegaConf.create(record.config)
    how = "the binary model's latent weights (no twin stage in this run)"
    if OmegaConf.select(cfg, "pretrain.activation") is None:  # pretrain=none: the twin of Bi-Real Table 1's "clip"
        OmegaConf.update(cfg, "pretrain.activation", {"_target_": "onebit.nn.quantizers.Clip"}, force_add=True)
        how += ", clip activations"
    twin = make_model(cfg, instantiate(cfg.data), "twin")
    twin.load_state_dict(binary.state_dict(), strict=False)
    return twin.eval(), how


def export_run(record, threads: int = 1, min_agreement: float = AGREEMENT_MIN, log=print) -> dict:
    """Export the final binary model of ``record``'s run: build and convert it (and its float twin), check the
    TFLite model against PyTorch on the full test split, measure size and latency, then write ``model.tflite``
    and ``twin.tflite`` into the run directory and the results into the record (``export``). Nothing is written
    unless every check passed."""
    require_extra()
    stage = exportable_stage(record)
    started = time.time()
    binary = model_from_record(record, stage)
    try:
        data = instantiate(OmegaConf.create(record.config).data)
        data.prepare_data()
        data.setup("test")
    except Exception as e:  # noqa: BLE001  (the run's data is gone or moved: one line with its real cause)
        raise config_error(e) from None
    input_size = tuple(data.input_size)
    twin, twin_weights = twin_model(record, binary)
    log(f"onebit export: building the LCE graph of {type(binary).__name__} ({stage}, input {input_size})")
    model_fb, info = convert(binary, input_size, binary=True)
    twin_fb, _ = convert(twin, input_size, binary=False)
    ops = operators(model_fb)
    if ops.get("LceBconv2d", 0) != info.binary_convs:
        raise ExportError(f"LCE converted {ops.get('LceBconv2d', 0)} of the {info.binary_convs} binary convolutions "
                          f"into 1-bit ones (operators: {ops})")
    log(f"onebit export: checking against PyTorch on the full test split ({data.name})")
    check = compare(binary, model_fb, data.test_dataloader())
    check_twin = compare(twin, twin_fb, data.test_dataloader())
    if check["agreement"] < min_agreement:
        raise ExportError(f"the LCE model disagrees with PyTorch: top-1 agreement {check['agreement']:.4%} < "
                          f"min_agreement={min_agreement:g} on {check['n']} test images (logits equal on "
                          f"{check['equal_logits']:.2%}, max difference {check['max_logit_diff']:.3g}); nothing "
                          "written")
    counts, twin_counts = summarize(binary, input_size), summarize(twin, input_size)
    log(f"onebit export: measuring batch-1 latency ({threads} thread{'s' if threads > 1 else ''})")
    latency = measure_latency(binary, twin, model_fb, twin_fb, input_size, threads)
    run_dir = Path(record.run_dir)
    atomic_write(run_dir / TWIN_NAME, lambda f: f.write(twin_fb))
    atomic_write(run_dir / MODEL_NAME, lambda f: f.write(model_fb))
    result = {
        "stage": stage, "model": MODEL_NAME, "twin": TWIN_NAME, "input_size": list(input_size),
        "bytes": len(model_fb), "counted_bytes": counted_bytes(counts.memory_mbit),
        "memory_mbit": counts.memory_mbit, "binary_params": counts.binary_params, "real_params": counts.real_params,
        "twin_bytes": len(twin_fb), "twin_counted_bytes": counted_bytes(twin_counts.memory_mbit),
        "ops": ops, "binary_convs": info.binary_convs, "folded_scales": info.folded_scales,
        "multiplied_scales": info.multiplied_scales, "twin_weights": twin_weights,
        "check": check, "check_twin": check_twin, "split": "test", "min_agreement": min_agreement,
        "latency_ms": latency, "threads": threads, "interpreter": INTERPRETER, "machine": machine(),
        "versions": versions(),
        "counted_ops": counts.ops, "twin_counted_ops": twin_counts.ops,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
    }
    record.export = result
    record.save()
    return result


def result_lines(record, r: dict) -> list[str]:
    """The printed summary of an export."""
    c, lat = r["check"], r["latency_ms"]
    lines = [
        f"onebit export: {Path(record.run_dir) / r['model']}  ({r['bytes'] / 1e6:.3f} MB; onebit counts "
        f"{r['counted_bytes'] / 1e6:.3f} MB = {r['memory_mbit']:.3f} Mbit: {r['binary_params']:,} 1-bit weights + "
        f"{r['real_params']:,} 32-bit; file / count {r['bytes'] / r['counted_bytes']:.3f})",
        f"onebit export: {r['binary_convs']} binary convolutions -> {r['ops'].get('LceBconv2d', 0)} LceBconv2d "
        f"(scale folded into BatchNorm in {r['folded_scales']}); twin {r['twin']} {r['twin_bytes'] / 1e6:.3f} MB "
        f"(x{r['twin_bytes'] / r['bytes']:.1f} the 1-bit model)",
        f"onebit export: test split, {c['n']} images: top-1 agreement with PyTorch {c['agreement']:.4%} (>= "
        f"{r['min_agreement']:g} required), logits equal within 1e-3 on {c['equal_logits']:.2%} (max difference "
        f"{c['max_logit_diff']:.2e}); top-1 PyTorch {c['top1_torch']:.4f}, LCE {c['top1_tflite']:.4f}",
        f"onebit export: batch-1 latency, {r['threads']} thread(s), {r['machine']['processor']}: LCE 1-bit "
        f"{lat['lce_binary']:.3f} ms, float TFLite twin {lat['tflite_twin']:.3f} ms "
        f"(x{lat['tflite_twin'] / lat['lce_binary']:.2f}); PyTorch binary {lat['torch_binary']:.3f} ms, twin "
        f"{lat['torch_twin']:.3f} ms",
    ]
    if record.smoke:
        lines.append(f"onebit export: note: SMOKE RUN ({', '.join(record.smoke)}): the model comes from a shortened "
                     "run, not a result")
    return lines
