"""Figures that probe models rather than records:

1. Bi-Real Fig. 3 (section 3.2): the sign function, its approximations and their derivatives, the derivatives
   computed by onebit's own quantizer components (``onebit.nn.quantizers``);
2. Bi-Real section 3.1: the real-valued inputs to the Sign of one block with shortcuts (Bi-Real) and without
   (Plain), captured with a forward pre-hook, from a trained ``structure=bireal`` / ``structure=plain`` pair's
   checkpoints (``onebit.training.checkpoints.model_from_record``) when the records hold one, else from freshly
   initialised models (no records needed).

The numbers (:func:`sign_curves`, :func:`activation_data`) are returned as well as drawn, so tests and scripts
check them without reading pixels."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from onebit.core.registry import BINARY
from onebit.data import DigitsData
from onebit.figures.common import PROG, plt, save_figure
from onebit.nn.models import BiRealResNet
from onebit.nn.models.resnet import BinaryBlock
from onebit.nn.quantizers import ApproxSign, Clip, MagnitudeAware, SteSign, SwishSign, binary_sign
from onebit.records.record import RunRecord
from onebit.results.cells import common_options
from onebit.results.figures import UsageError, shortcut_pair
from onebit.training.checkpoints import model_from_record

FALLBACK_WIDTH = DigitsData.default_width  # the fresh models of the activations figure

# ----------------------------------------------------------------------------------------------------------
# 1. Sign approximations (Bi-Real Fig. 3)
# ----------------------------------------------------------------------------------------------------------


def sign_curves(x: np.ndarray | None = None, beta: float = 5.0) -> dict[str, dict]:
    """Bi-Real Fig. 3 (section 3.2, Eq. 2-3) plus BNN+'s SwishSign: per approximation, ``f`` (the function the
    backward pass pretends the forward is) and ``df`` (its derivative, the pseudo-gradient), on the grid ``x``.

    ``df`` always comes from onebit's real components (``SteSign(1).derivative``, ``ApproxSign().derivative``,
    ``SwishSign(beta).derivative``; sign's derivative is 0 except a Dirac delta at 0); ``f`` is sign
    (``binary_sign``), clip (the ``Clip`` component), ApproxSign's F(x) (Bi-Real Eq. 3) and SwishSign's
    ``2 sigmoid(bx)(1 + bx(1 - sigmoid(bx))) - 1``, so the figure also shows that each component's derivative
    is the slope of the function it claims to approximate (tested)."""
    if x is None:
        x = np.linspace(-2, 2, 4001)
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    swish = SwishSign(beta)
    b = swish.beta
    sig = torch.sigmoid(b * t)
    approx_f = torch.where(t < -1, -torch.ones_like(t), torch.where(
        t < 0, 2 * t + t**2, torch.where(t < 1, 2 * t - t**2, torch.ones_like(t))))
    with torch.no_grad():
        curves = {
            "sign": {"f": binary_sign(t.clone()), "df": torch.zeros_like(t),
                     "title": "(a) sign(x)", "component": "binary_sign (derivative: Dirac delta at 0)"},
            "clip": {"f": Clip()(t), "df": SteSign(1.0).derivative(t),
                     "title": "(b) clip(-1, x, 1): STE", "component": "Clip / SteSign(t=1).derivative"},
            "approx": {"f": approx_f, "df": ApproxSign().derivative(t),
                       "title": "(c) ApproxSign F(x)", "component": "ApproxSign().derivative"},
            "swish": {"f": 2 * sig * (1 + b * t * (1 - sig)) - 1, "df": swish.derivative(t),
                      "title": f"(d) SwishSign, b={b:g}", "component": f"SwishSign({b:g}).derivative"},
        }
    for c in curves.values():
        c["f"], c["df"] = c["f"].numpy(), c["df"].numpy()
    curves["x"] = np.asarray(x, dtype=np.float64)
    return curves


def plot_signs(path: Path | str, beta: float = 5.0) -> Path:
    """Bi-Real Fig. 3 (section 3.2): top row the sign function and its differentiable approximations (clip,
    whose derivative is the STE of Eq. 2; ApproxSign's piecewise polynomial F of Eq. 3; SwishSign of BNN+ with
    b = 5), bottom row their derivatives as computed by onebit's components (``.derivative``)."""
    curves = sign_curves(beta=beta)
    x = curves.pop("x")
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 5.6), sharex=True)
    for j, (name, c) in enumerate(curves.items()):
        top, bottom = axes[0][j], axes[1][j]
        top.plot(x, c["f"], color="C0", lw=1.6)
        top.set_title(c["title"], fontsize=10)
        top.set_ylim(-1.3, 1.3)
        bottom.plot(x, c["df"], color="C3", lw=1.6)
        if name == "sign":
            bottom.annotate("", xy=(0, 2.2), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="C3", lw=1.6))
            bottom.text(0.08, 2.0, "δ(x)", color="C3")
        bottom.set_ylim(min(-0.1, float(np.nanmin(c["df"])) * 1.3), max(2.4, float(np.nanmax(c["df"])) * 1.1))
        bottom.set_title(c["component"], fontsize=7.5)
        bottom.set_xlabel("x")
        for ax in (top, bottom):
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F(x)")
    axes[1][0].set_ylabel("∂F/∂x (backward)")
    fig.suptitle("Bi-Real Net Fig. 3: sign and its approximations (top) and their derivatives used in the "
                 "backward pass (bottom)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 2. Block activations with vs. without shortcuts (Bi-Real section 3.1)
# ----------------------------------------------------------------------------------------------------------


def resolve_block(model, spec: str = "layer2.-1"):
    """The residual block named ``layerN.i`` (``i`` may be negative), e.g. ``layer2.-1`` = last block of layer2."""
    layer, _, index = spec.partition(".")
    blocks = getattr(model, layer, None)
    valid = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    if blocks is None or not index.lstrip("-").isdigit():
        raise UsageError(f"unknown --block {spec!r}; use layerN.i with layerN in {', '.join(valid)}, e.g. layer2.-1")
    try:
        block = blocks[int(index)]
    except IndexError:
        raise UsageError(f"unknown --block {spec!r}: {layer} has {len(blocks)} blocks "
                         f"(index {-len(blocks)}..{len(blocks) - 1})") from None
    if not isinstance(block, BinaryBlock):
        raise UsageError(f"--block {spec!r} is a {type(block).__name__}, not a BinaryBlock")
    return block


def block_input(model, x, spec: str = "layer2.-1"):
    """The real-valued tensor that the Sign of block ``spec`` binarizes (the input of its first
    ``BinaryConv2d``, before its ``input_quantizer``), captured with a forward pre-hook on one forward pass."""
    conv = resolve_block(model, spec).conv1
    captured = []
    handle = conv.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[0]


def activation_stats(t) -> dict:
    """count (number of values), distinct values (whole tensor, and the mean over channels of the distinct values
    per channel, dim 1: the paper's argument is per channel, since BN is a per-channel affine map), mean and std
    (ddof=1) of a tensor, and its shape."""
    shape = tuple(t.shape)
    t = t.detach().double()
    per_channel = ([int(torch.unique(t[:, c]).numel()) for c in range(t.shape[1])] if t.dim() > 1 else
                   [int(torch.unique(t).numel())])
    flat = t.flatten()
    return {"count": int(flat.numel()), "distinct": int(torch.unique(flat).numel()),
            "distinct_per_channel": float(np.mean(per_channel)), "mean": float(flat.mean()),
            "std": float(flat.std()), "shape": shape}


def _first_val_batch(data):
    data.setup("fit")
    x, _ = next(iter(data.val_dataloader()))
    return x


def activation_data(records: Sequence[RunRecord] | None = None, block: str = "layer2.-1", width: int = FALLBACK_WIDTH,
                    seed: int = 0, stage: str = BINARY) -> dict:
    """Inputs to the Sign of ``block`` for a net with shortcuts (``bireal``) and without (``plain``).

    Trained: when ``records`` hold a finished ``structure=bireal`` / ``structure=plain`` pair (same other options,
    first seed; ``onebit.results.figures.shortcut_pair``) with ``stage`` checkpoints, both models come from
    ``onebit.training.checkpoints.model_from_record``
    (eval mode) and see the first validation batch of the bireal run's data module. Otherwise (or if loading fails,
    reported on stderr) freshly initialised Bi-Real-18s (ApproxSign, magnitude-aware weights, small stem, digits)
    built after ``torch.manual_seed(seed)``, with BatchNorm in training mode (batch statistics; at init the
    running statistics are the identity), on the first digits validation batch.

    Returns ``{"source": "trained" | "init", "detail": str, "bireal": {...}, "plain": {...}}``, each side with
    ``values`` (numpy), ``stats`` (:func:`activation_stats`, computed from the hooked tensor, with its shape)."""
    pair = shortcut_pair(records or [], stage)
    if pair is not None:
        try:
            models = {name: (model_from_record(rec, stage), rec) for name, rec in zip(("bireal", "plain"), pair)}
            x = _first_val_batch(instantiate(OmegaConf.create(pair[0].config).data))
            out = {"source": "trained", "detail": f"{stage} checkpoints (last.ckpt), seed "
                                                  f"{pair[0].options.get('seed')} ({common_options(pair)})"}
            for name, (model, rec) in models.items():
                t = block_input(model, x, block)
                out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t), "run_dir": rec.run_dir}
            return out
        except UsageError:
            raise
        except Exception as e:  # a missing dataset, an unreadable checkpoint: say so and fall back
            print(f"{PROG}: activations: could not use the trained checkpoints ({type(e).__name__}: {e}); "
                  f"using freshly initialised models", file=sys.stderr)
    x = _first_val_batch(DigitsData(seed=seed))
    out = {"source": "init", "detail": f"freshly initialised Bi-Real-18 (width {width}, seed {seed}, ApproxSign, "
                                       "magnitude-aware, BN batch statistics), no trained bireal/plain pair found"}
    for name, shortcut in (("bireal", True), ("plain", False)):
        torch.manual_seed(seed)
        model = BiRealResNet(ApproxSign(), MagnitudeAware(), depth=18, structure="bireal", shortcut=shortcut,
                             width=width, stem="small", in_channels=1, num_classes=10).train()
        t = block_input(model, x, block)
        out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t)}
    return out


def shared_bins(arrays, bins: int = 120) -> np.ndarray:
    """One set of ``bins`` equal-width bin edges over the range of all ``arrays`` together, so that compared
    histograms share their x range and bins (a count per bin is then comparable across panels)."""
    return np.histogram_bin_edges(np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]), bins=bins)


def plot_activations(path: Path | str, records: Sequence[RunRecord] | None = None, block: str = "layer2.-1",
                     width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = BINARY) -> tuple[Path, dict]:
    """:func:`activations_figure` saved as PNG at ``path``; returns (path, data)."""
    fig, data = activations_figure(records, block, width, seed, stage)
    return save_figure(fig, path), data


def activations_figure(records: Sequence[RunRecord] | None = None, block: str = "layer2.-1",
                       width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = BINARY):
    """Bi-Real section 3.1 (representational capability, cf. Fig. 1): histograms of the real-valued inputs to
    the Sign of one block with shortcuts (Bi-Real) and without (Plain), on one shared x range and the same bins
    (:func:`shared_bins`). Without a shortcut a block input is BN(binary conv(binary input)), a per-channel affine
    map of an integer count, so it takes few distinct values; the shortcut adds the previous real-valued
    activation and enlarges that set. Each panel's title states the number of values, of distinct values and the
    std (above the axes, off the data). Trained checkpoints when available, else fresh models (the title says
    which). Returns (figure, data of :func:`activation_data`)."""
    data = activation_data(records, block, width, seed, stage)
    edges = shared_bins([data["bireal"]["values"], data["plain"]["values"]])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True)
    for ax, (name, title, color) in zip(axes, (("bireal", "with shortcuts (Bi-Real)", "C0"),
                                                ("plain", "without shortcuts (Plain)", "C1"))):
        v, s = data[name]["values"], data[name]["stats"]
        ax.hist(v, bins=edges, color=color, alpha=0.85)
        ax.set_yscale("log")
        ax.set_title(f"{title}\nvalues {s['count']:,}, distinct {s['distinct']:,} "
                     f"({s['distinct_per_channel']:,.1f} per channel), std {s['std']:.3g}", fontsize=9)
        ax.set_xlabel(f"input of the Sign of {block}")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(edges[0], edges[-1])
    axes[0].set_ylabel(f"count (log; {len(edges) - 1} shared bins)")
    detail = textwrap.fill(f"{data['source']}: {data['detail']}", 150)
    fig.suptitle(f"Bi-Real section 3.1: block inputs to the Sign, {block}, shape "
                 f"{data['bireal']['stats']['shape']}; one x range and bins for both panels\n{detail}", fontsize=9)
    fig.tight_layout()
    return fig, data
