"""Padding: PyTorch's symmetric conv/pool windows expressed with TensorFlow's ``"same"`` padding (pure integer
arithmetic, no tensorflow): PyTorch's output size (:func:`torch_out`), the input extension that makes TF's windows
start where PyTorch's do (:func:`same_extension`) and TF's own padding (:func:`same_padding`). Why: see
:mod:`onebit.deploy.graph`, "padding"."""

from __future__ import annotations


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
