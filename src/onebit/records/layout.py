"""Where a run keeps its files (one fact, read by training, tracking, results and the entry points):

- ``<run dir>/record.json``: the record (:data:`RECORD_NAME`);
- ``<run dir>/checkpoints/<stage>/last.ckpt`` and ``best.ckpt`` (:func:`stage_dir`, :func:`stage_checkpoint`):
  the stage's last epoch (what a stage resumes from, its final weights) and its best ``val/top1`` epoch;
- ``<job dir>/job.json`` (:data:`POINTER`): which record a Hydra job directory ran, skipped or refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from onebit.core.registry import VAL_TOP1

RECORD_NAME = "record.json"
POINTER = "job.json"
LAST, BEST = "last.ckpt", "best.ckpt"
MONITOR = VAL_TOP1  # what best.ckpt ranks epochs by (mode max)


def stage_dir(run_dir: Path | str, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def stage_checkpoint(run_dir: Path | str, stage: str, weights: str = "last") -> Path | None:
    """``<run dir>/checkpoints/<stage>/<weights>.ckpt`` (weights: ``last`` or ``best``) if it exists."""
    path = stage_dir(run_dir, stage) / {"last": LAST, "best": BEST}[weights]
    return path if path.exists() else None


def read_pointer(job_dir: Path | str) -> dict | None:
    """The ``job.json`` of a job directory (``None``: it has none); OSError or ValueError when unreadable."""
    try:
        pointer = json.loads((Path(job_dir) / POINTER).read_text())
    except FileNotFoundError:
        return None
    if not isinstance(pointer, dict):
        raise ValueError("not a JSON object")
    return pointer
