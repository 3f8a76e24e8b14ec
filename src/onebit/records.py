"""The local run record: one JSON file per run, written atomically, that the analysis reads.

A record holds the resolved config, the chosen option of every group, per-stage metrics and timings, the status
(``running`` / ``finished`` / ``failed`` with the error), versions and the git commit. It is rewritten (never
appended) after every change, through a temporary file and ``os.replace``, so a reader sees either the previous
complete record or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECORD_NAME = "record.json"
SCHEMA = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class CorruptRecordError(ValueError):
    """A record file that is not a complete onebit record."""


def read_record(path: Path) -> dict:
    """Load and sanity-check one record; raises :class:`CorruptRecordError` naming the path."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecordError(f"{path}: corrupt or truncated record ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "status" not in data or "options" not in data:
        raise CorruptRecordError(f"{path}: not a onebit record (missing schema/status/options)")
    return data


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

    import onebit

    v = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
         "pytorch_lightning": pytorch_lightning.__version__, "hydra": hydra.__version__, "onebit": onebit.__version__}
    try:
        import wandb

        v["wandb"] = wandb.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


class Record:
    """The record of one run, saved to ``<run_dir>/record.json`` on every update."""

    def __init__(self, path: Path, data: dict):
        self.path = Path(path)
        self.data = data

    @classmethod
    def start(cls, run_dir: Path, *, job_key: str, study: str, options: dict, config: dict) -> "Record":
        data = {
            "schema": SCHEMA,
            "job_key": job_key,
            "study": study,
            "status": "running",
            "error": None,
            "options": options,
            "config": config,
            "stages": {},
            "efficiency": None,
            "timings": {"started": time.time(), "ended": None, "seconds": None},
            "versions": versions(),
            "git_commit": git_commit(),
            "run_dir": str(run_dir),
            "host": platform.node(),
            "wandb": {},
        }
        record = cls(Path(run_dir) / RECORD_NAME, data)
        record.save()
        return record

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def stage(self, name: str) -> dict:
        return self.data["stages"].setdefault(name, {"status": "running", "metrics": {}})

    def update_stage(self, name: str, **fields) -> None:
        self.stage(name).update(fields)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        t = self.data["timings"]
        t["ended"] = time.time()
        t["seconds"] = round(t["ended"] - t["started"], 3)
        self.data["status"] = status
        self.data["error"] = error
        self.save()
