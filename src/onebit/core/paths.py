"""Where things are: the repository's config groups (``conf/``), the sweeps (``sweeps/``) and the output root
(``output_root``, default ``outputs``, or ``ONEBIT_OUTPUTS``), read the same way by every entry point."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"
OUTPUTS_ENV = "ONEBIT_OUTPUTS"


def output_root() -> str:
    """The default output root of every entry point: ``$ONEBIT_OUTPUTS``, else ``outputs`` (relative to the
    working directory, as conf/train.yaml's ``output_root``)."""
    return os.environ.get(OUTPUTS_ENV) or "outputs"
