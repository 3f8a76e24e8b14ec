"""Which process of a distributed job this is, read from the launcher's environment (before any process group
exists): only global rank zero writes records and lines."""

from __future__ import annotations

import os


def global_rank() -> int:
    """This process's global rank from the launcher's environment; 0 otherwise."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0
