"""Resume at any moment: a job killed (SIGKILL, a real process) at each named point of its recipe and run again
with the same command ends with a record equal, metric for metric and epoch for epoch, to an uninterrupted run.

The points (``onebit.killpoints``) cover: during a stage, after a stage's last checkpoint, during its test,
while saving the pretrain cache, between stages, during BN retraining, and after the last stage."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import only_record, run_train

from onebit.records.record import read_record

# deterministic, full digits epochs, every stage kind: pretrain (cached) -> binary -> bn_retrain
ARGS = ["model.width=4", "logger=none", "trainer.deterministic=true", "threads=1", "epochs=2", "bn_retrain=true"]
POINTS = ["epoch_end:pretrain:0", "cache_save", "stage_end:pretrain", "epoch_end:binary:0", "fit_end:binary",
          "test:binary", "epoch_end:bn_retrain:0", "job_end"]


def essence(rec) -> dict:
    """What must not depend on interruptions: status, and per stage its status, init, cache hit, transfer
    checksum, final metrics and per-epoch history (wall-clock seconds excluded)."""
    return {"status": rec.status, "stages": {
        n: {"status": s.status, "init": s.init, "epochs": s.epochs, "metrics": s.metrics,
            "hit": (s.cache or {}).get("hit"), "transfer": (s.transfer or {}).get("sha256"),
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in s.history]}
        for n, s in rec.stages.items()}}


@pytest.fixture
def uninterrupted(train_once):
    return train_once(*ARGS)  # conftest: trained once per session (in-process), shared: read only


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_point_then_rerun_equals_uninterrupted(tmp_path, uninterrupted, point):
    killed = run_train([*ARGS, f"output_root={tmp_path}"], env={"ONEBIT_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = only_record(tmp_path)
    assert before.status == "running"
    again = run_train([*ARGS, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    after = only_record(tmp_path)
    assert (after.run_dir, after.run_id, after.attempts) == (before.run_dir, before.run_id, 2)
    assert essence(after) == essence(uninterrupted)
    assert sum(1 for _ in tmp_path.rglob("record.json")) == 1


def test_wandb_run_ids_are_unique_per_run_and_kept_on_resume(tmp_path, monkeypatch):
    import wandb

    # a W&B service in this (parent) process, whose WANDB_SERVICE the jobs inherit: the killed job's W&B run must
    # not stay "in use" there (each onebit process owns its service)
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.init(mode="offline", dir=str(tmp_path)).finish()
    assert "WANDB_SERVICE" in os.environ
    args = [*ARGS[1:], "model.width=4", "logger=wandb", "logger.mode=offline", "pretrain=none", "bn_retrain=false",
            f"output_root={tmp_path}"]
    killed = run_train(args, env={"ONEBIT_KILL_AT": "epoch_end:binary:0"})
    assert killed.returncode == -signal.SIGKILL
    first = only_record(tmp_path)
    assert run_train(args).returncode == 0
    resumed = only_record(tmp_path)
    assert resumed.stages["binary"].wandb["id"] == first.stages["binary"].wandb["id"] == f"{first.run_id}-binary"
    attempts = sorted(p.name for p in Path(resumed.run_dir, "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(a.endswith(f"-{first.run_id}-binary") for a in attempts), attempts
    other = run_train([*args, "resume=false"])  # the same config again, as a new run: a new W&B run
    assert other.returncode == 0
    records = [read_record(p) for p in tmp_path.rglob("record.json")]
    assert len({r.run_id for r in records}) == 2
    assert len({r.stages["binary"].wandb["id"] for r in records}) == 2
