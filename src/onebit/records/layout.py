"""Where a run keeps its files (one fact, read by training, tracking, results and the entry points):

- ``<run dir>/record.json``: the record (:data:`RECORD_NAME`);
- ``<run dir>/checkpoints/<stage>/last.ckpt`` and ``best.ckpt`` (:func:`stage_dir`, :func:`stage_checkpoint`):
  the stage's last epoch (what a stage resumes from, its final weights) and its best ``val/top1`` epoch;
- ``<run dir>/train.log`` (:data:`LOG`): the run's log, every attempt's lines in order;
- ``<job dir>/job.json`` (:data:`POINTER`): which record a Hydra job directory ran, skipped or refused. A job
  directory that holds no run (refused, busy, skipped, or a resumed attempt whose lines went to the run's own log)
  is removed when its command ends (:func:`remove_stub`), so that every directory under the outputs is a run's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from onebit.core.registry import VAL_TOP1

RECORD_NAME = "record.json"
POINTER = "job.json"
LOG = "train.log"  # Hydra's job log (``${hydra.job.name}.log``); a run's log holds every attempt (records.record)
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


STUB_ACTIONS = ("refused", "busy", "skipped", "resumed")
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def remove_stub(job_dir: Path | str) -> bool:
    """Remove Hydra's directory of a job that holds no run: its ``job.json`` says refused / busy / skipped /
    resumed and names no record in this directory. Only the files Hydra and onebit wrote there (:data:`POINTER`,
    :data:`LOG`, :data:`HYDRA_FILES`) are deleted, and the directory only if nothing else is left in it. Returns
    whether it is gone."""
    job_dir = Path(job_dir)
    try:
        pointer = read_pointer(job_dir)
    except (OSError, ValueError):
        return False
    if pointer is None or pointer.get("action") not in STUB_ACTIONS:
        return False
    if pointer.get("record") and Path(pointer["record"]).resolve() == job_dir.resolve():
        return False
    for name in (POINTER, LOG, *HYDRA_FILES):
        (job_dir / name).unlink(missing_ok=True)
    for d in (job_dir / ".hydra", job_dir):
        try:
            d.rmdir()
        except OSError:
            return False
    return True


def remove_if_empty(directory: Path | str, names: tuple[str, ...] = ()) -> bool:
    """Remove ``directory`` when it holds no directory and no file other than those named in ``names`` (e.g.
    Hydra's ``multirun.yaml`` in a sweep directory whose jobs were all stubs); returns whether it is gone."""
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return False
    if any(e.name not in names or e.is_dir() for e in entries):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()
