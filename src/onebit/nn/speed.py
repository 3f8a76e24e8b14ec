"""Speed options that do not change what a model computes: ``channels_last`` memory format and ``torch.compile``.

Both are off by default and measured by ``analysis/bench_speed.py`` (training step and inference of Bi-Real-18, each
option alone and both, against the plain model). Neither changes the module tree: a converted or compiled model has
the same ``state_dict`` keys, so checkpoints, the pretrain cache and ``load_state_dict`` work as before.

Outputs equal the plain model's up to float rounding (a compiled graph fuses and reorders float operations; an NHWC
convolution sums in another order). The sign of a binary network turns a rounding difference in a pre-activation
within a few ulps of zero into a different +-1, so runs with and without these options are equally valid but not
bitwise identical (tests/test_speed.py checks equality in float64, where such a flip needs a pre-activation within
about 1e-16 of zero).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_speed_options", "check_speed_options", "compile_modes"]


def compile_modes() -> tuple[str, ...]:
    """torch.compile's mode names (``torch._inductor.list_mode_options()``: default, reduce-overhead,
    max-autotune...). Imports Inductor: call it only when compiling."""
    import torch._inductor

    return tuple(torch._inductor.list_mode_options())


def check_speed_options(channels_last, compile) -> None:
    """A one-line ``ValueError`` naming the value and the valid choices unless ``channels_last`` is a bool and
    ``compile`` a bool or a mode name (for a check at start-up, before any model is built)."""
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last={channels_last!r} is invalid: choose one of true, false")
    if isinstance(compile, bool):
        return
    modes = compile_modes()
    if not isinstance(compile, str) or compile not in modes:
        raise ValueError(f"compile={compile!r} is invalid: choose one of false, true, {', '.join(modes)}")


def apply_speed_options(model: nn.Module, channels_last: bool, compile: bool | str) -> nn.Module:
    """Apply the speed options to ``model`` in place and return it.

    - ``channels_last``: parameters and buffers of 4-d shape (conv weights) move to the NHWC memory format
      (``model.to(memory_format=torch.channels_last)``); a convolution whose weight is NHWC gives an NHWC output
      (also from an NCHW input), so the activations of the whole network follow. Values are unchanged.
    - ``compile``: ``False`` none; ``True`` ``torch.compile`` with its default mode; or a mode name
      (:func:`compile_modes`, e.g. ``"max-autotune"``). Compiled with ``nn.Module.compile``, in place: the module
      is not wrapped in an ``OptimizedModule``, so ``state_dict`` keys stay ``conv1.weight`` (not
      ``_orig_mod.conv1.weight``) and a LightningModule holding it saves ``model.*`` keys as before. The first call
      in each setting (train / eval, grad / no grad, autocast or not) compiles; later calls reuse the graph, and
      changed weights are read afresh (they are graph inputs, not constants). Inductor on the CPU needs a C++
      compiler.

    Anything else raises a one-line ``ValueError`` naming the value and the valid choices, before anything changes.
    """
    check_speed_options(channels_last, compile)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile is not False:
        model.compile(**({} if compile is True else {"mode": compile}))
    return model
