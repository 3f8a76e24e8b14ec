"""Where a record comes from: the versions of the libraries that made it and the git commit of onebit's code."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from onebit import __version__


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict:
    import hydra
    import pytorch_lightning
    import torch

    v = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
         "pytorch_lightning": pytorch_lightning.__version__, "hydra": hydra.__version__, "onebit": __version__}
    try:
        import wandb

        v["wandb"] = wandb.__version__
    except ImportError:  # pragma: no cover
        pass
    return v
