"""What every figure shares: the Agg backend (no display needed), atomic PNG writes with the user's umask
(``onebit.core.files.atomic_write``), the palette, the value-axis label (``(%)`` for the registry's accuracy
metrics), a value axis around the data (not from 0), the subtitle naming the options common to every run, and the
file-name slug. The other modules take ``plt`` from here, so the backend is set before pyplot is first imported."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onebit.core.files import atomic_write  # noqa: E402
from onebit.core.registry import METRICS  # noqa: E402
from onebit.records.record import RunRecord  # noqa: E402
from onebit.results.cells import common_options  # noqa: E402

PROG = "plots"  # the prefix of every line a figure writes on stderr


def option_text(value) -> str:
    """An option value as compared across cells and panels (``str``, lower case)."""
    return str(value).lower()


def subtitle(records: Sequence[RunRecord], notes: Sequence[str]) -> str:
    """The title's tail: the options every run shares, then ``notes`` (what was left out), one per line."""
    common = common_options(records)
    return "".join([f"\ncommon: {common}" if common else "", *(f"\n{n}" for n in notes)])


def axis_label(metric: str) -> str:
    """``test/top1 (%)`` for the registry's accuracy metrics (drawn x 100), the bare name for anything else."""
    return f"{metric} (%)" if metric in METRICS else metric


def palette(n: int) -> list:
    """``n`` distinct colours (tab10, tab20 beyond 10)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def slug(value: str) -> str:
    """``value`` fit for a file name: anything but letters, digits and ``-_.`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(value))


def save_figure(fig, path: Path | str) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and with the user's umask (``onebit.core.files``), then close
    it."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def value_limits(values, margin: float = 0.12, percent: bool = False) -> tuple[float, float]:
    """An axis range around the data, not from 0: [lo - m, hi + m] with lo / hi the smallest / largest value drawn
    (error bars included) and m = ``margin`` x (hi - lo) (1 when all values are equal); a percent axis is clipped
    to [0, 100] where the data allow. A 3-point effect at 95-98 % fills the axis instead of vanishing."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    m = margin * (hi - lo) if hi > lo else 1.0
    if percent:
        return (max(lo - m, 0.0) if lo >= 0 else lo - m), (min(hi + m, 100.0) if hi <= 100 else hi + m)
    return lo - m, hi + m
