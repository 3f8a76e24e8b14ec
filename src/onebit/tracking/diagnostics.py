"""Seeing inside a binary net while it trains: per binary layer, once per epoch, logged to every logger and kept in
the stage's per-epoch history (``diagnostics: true`` in conf/train.yaml; ``diagnostics=false`` turns it off).

Keys (``<layer>`` is the layer's name in ``model.named_modules()``; ``mean`` is the mean over the layers):

- ``diag/flip/<layer>``: the share of the layer's binary weights whose sign changed between the start and the end
  of the epoch, ``mean(sign(W_end) != sign(W_start))`` with ``sign(0) = +1`` (larq's QuantizationLogger logs the
  same per batch as ``changed_quantization_ration``; Helwegen et al. 2019 call it the flip ratio);
- ``diag/clip/<layer>``: the share of latent weights at the clip bound, ``mean(|W| >= c)``, when
  ``optimizer.latent_weight_clip = c`` is set (BinaryDenseNet); absent otherwise;
- ``diag/plus/<layer>``: the share of +1 in the binarized inputs of the layer, ``mean(a(x) > 0)`` over the
  epoch's validation batches (the output of the layer's activation component, padding excluded): 0.5 is a
  balanced layer, near 0 or 1 a layer whose sign carries little information.

Cost: one sign snapshot of the binary weights per epoch (1 byte per weight), one reduction per layer and validation
batch accumulated on the device, and one host synchronisation per epoch (``analysis/bench.py --only diagnostics``).
Layers whose weights are not 1-bit have no flip / clip keys; layers whose inputs are not 1-bit have no plus key; a
model without binary layers (the real-valued twin) logs nothing.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from onebit.nn.layers import BinaryConv2d

PREFIX = "diag"


class BinaryDiagnostics(Callback):
    """The flip ratio, the share at the clip bound and the share of +1 inputs of each binary layer, per epoch
    (see the module docstring). The clip bound is the LightningModule's ``latent_weight_clip`` (None: no clip)."""

    def __init__(self):
        self._weights: list[tuple[str, torch.nn.Parameter]] = []
        self._inputs: list[tuple[str, BinaryConv2d]] = []
        self._start: list[torch.Tensor] | None = None  # sign(W) >= 0 at the epoch's start, per layer
        self._plus: torch.Tensor | None = None  # +1 counts of the binarized inputs, per layer, on the device
        self._seen: list[int] = []  # elements counted per layer (host integers: shapes, no synchronisation)
        self._hooks: list = []
        self._plus_share: dict[str, float] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]
        self._weights = [(n, m.weight) for n, m in layers if m.weight_precision == 1]
        self._inputs = [(n, m) for n, m in layers if m.input_precision == 1]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = [w.detach() >= 0 for _, w in self._weights]
        self._plus_share = None

    # -- the share of +1 inputs, accumulated during validation -----------------------------------------------

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._inputs:
            return
        self._plus, self._seen = None, [0] * len(self._inputs)
        for i, (_, layer) in enumerate(self._inputs):
            self._hooks.append(layer.input_quantizer.register_forward_hook(self._counter(i)))

    def _counter(self, i: int):
        def hook(module, args, out):
            if self._plus is None:
                self._plus = torch.zeros(len(self._inputs), device=out.device, dtype=torch.float64)
            self._plus[i] += (out > 0).sum()
            self._seen[i] += out.numel()
        return hook

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hooks()
        if trainer.sanity_checking or self._plus is None:
            return
        counts = torch.cat([self._plus, torch.tensor(self._seen, dtype=torch.float64, device=self._plus.device)])
        counts = trainer.strategy.reduce(counts, reduce_op="sum")  # DDP: every rank's batches; else a no-op
        plus, seen = counts.tolist()[:len(self._inputs)], counts.tolist()[len(self._inputs):]
        self._plus_share = {n: p / s for (n, _), p, s in zip(self._inputs, plus, seen) if s}  # s: 0 if never called
        self._plus = None

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._remove_hooks()

    # -- once per epoch, after its validation: log and keep -----------------------------------------------------

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        values = self.epoch_values(getattr(pl_module, "latent_weight_clip", None))
        if not values:
            return
        for key, value in values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, rank_zero_only=True)
        entry = getattr(pl_module, "_epoch_entry", None)  # onebit's Classifier: the stage's per-epoch history
        if entry is not None:
            entry().update(values)

    def epoch_values(self, clip: float | None) -> dict[str, float]:
        """The epoch's ``diag/*`` values (one host synchronisation for the weights' counts)."""
        values: dict[str, float] = {}
        if self._weights and self._start is not None:
            counts = [((w.detach() >= 0) != s).sum() for (_, w), s in zip(self._weights, self._start)]
            if clip is not None:
                counts += [(w.detach().abs() >= clip).sum() for _, w in self._weights]
            counts = torch.stack(counts).tolist()
            sizes = [w.numel() for _, w in self._weights]
            names = [n for n, _ in self._weights]
            values.update(_with_mean("flip", names, [c / s for c, s in zip(counts, sizes)]))
            if clip is not None:
                values.update(_with_mean("clip", names, [c / s for c, s in zip(counts[len(sizes):], sizes)]))
        if self._plus_share:
            values.update(_with_mean("plus", list(self._plus_share), list(self._plus_share.values())))
        self._start = None
        return values


def _with_mean(kind: str, names: list[str], shares: list[float]) -> dict[str, float]:
    """``diag/<kind>/<layer>`` for each layer and ``diag/<kind>/mean``, their mean over the layers."""
    out = {f"{PREFIX}/{kind}/{n}": float(v) for n, v in zip(names, shares)}
    out[f"{PREFIX}/{kind}/mean"] = float(sum(shares) / len(shares))
    return out
