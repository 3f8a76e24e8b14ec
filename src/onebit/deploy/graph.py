"""Export a trained binary network as a real 1-bit model: a Larq Compute Engine (LCE) TFLite flatbuffer.

In PyTorch a binary net is stored and run in float (32 bits per weight, float convolutions). LCE (Bannink et al.
2021, "Larq Compute Engine: design, benchmark and deploy state-of-the-art binarized neural networks") converts a
Keras graph into a TFLite model whose binary convolutions are ``LceBconv2d`` ops on bit-packed weights (1
bit each) fed by ``LceQuantize`` (the sign of the input, packed 32 to a word): Bi-Real Table 3's memory saving
made real. This module builds that graph from onebit's own module tree, layer for layer:

- a :class:`~onebit.nn.layers.BinaryConv2d` becomes what ``larq.layers.QuantConv2D(input_quantizer="ste_sign",
  kernel_quantizer="ste_sign")`` computes in inference: larq's ``ste_sign`` forward ``sign(sign(x) + 0.1)`` on the
  input (:func:`ste_sign`, which LCE's converter turns into ``LceQuantize``), then a conv with the constant kernel
  ``sign(W_r)`` (which it turns into ``LceBconv2d``). larq itself is not needed (it pins numpy < 2). The input
  component must compute Bi-Real Eq. 1, ``sign(x) = +1 if x >= 0 else -1``, in inference (every sign
  approximation does: they differ only in the backward pass), as ``ste_sign`` does. Its weight component must
  give ``alpha_o sign(W_r)`` with one ``alpha_o > 0`` per output channel (plain sign: ``alpha_o = 1``;
  magnitude-aware, Bi-Real Eq. 6, and XNOR scaling: ``alpha_o = ||W_r,o||_1 / n``). Checked on the layer's
  actual weights, not on its class name. A learnable input threshold (ReActNet's RSign, ``sign(x - alpha_c)``,
  ``sign.learnable_threshold=true``) is the same per-channel float32 subtraction before ``ste_sign``
  (:func:`~onebit.deploy.binary.input_threshold`); it is not folded into a preceding BatchNorm, which would round
  differently. These per-layer pieces live in :mod:`onebit.deploy.binary`.
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

Imported only by ``src/export.py`` (:mod:`onebit.cli.export`), :mod:`onebit.deploy` needs the optional extra
``pip install -e '.[export]'`` (:mod:`~onebit.deploy.extra`); then ``convert``, ``check`` and ``run`` use this graph.

LCE 0.16 defects this module works around (found by the tests, each exact): its optimised binary kernels compute
zero padding wrongly when the input is smaller than the kernel (a 1x1 or 2x2 map under a 3x3 conv; its reference
kernel is right), so there the conv pads with +1 and subtracts what the +1s added (:meth:`KerasGraph.
_one_padding_excess`); and its converter folds any constant added after a conv into the conv's per-channel bias,
also a per-position map, which the interpreter then rejects, so that subtraction follows a ``max(t, lowest)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onebit.deploy.binary import binary_kernel, input_threshold, is_sign, ste_sign
from onebit.deploy.extra import ExportError, _tf
from onebit.deploy.padding import same_extension, same_padding, torch_out
from onebit.nn.layers import FPReLU, RPReLU
from onebit.nn.models import BinaryDenseNet, BiRealResNet
from onebit.nn.quantizers import Clip, LeakyClip, Quantizer, RealWeight
from onebit.nn.quantizers import ReLU as ReLUActivation


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
        """A :class:`~onebit.nn.layers.BinaryConv2d`, and the BatchNorm after it (which absorbs the weight scale)."""
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
        threshold = input_threshold(conv)
        if threshold is not None:  # RSign (ReActNet Eq. 1): sign(x - alpha_c), the subtraction PyTorch computes
            x = self.keras.layers.Lambda(lambda t, a=threshold: t - a, name=self._name("threshold"))(x)
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
