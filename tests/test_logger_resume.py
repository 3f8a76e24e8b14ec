"""A resumed stage's file logger (CSV, TensorBoard) holds every epoch once across its attempts' versions: a job
interrupted after an epoch's checkpoint and before Lightning logged that epoch's train/* (the kill point
``epoch_end:binary:1``, SIGTERM) and run again logs that epoch's missing keys first in its own version
``binary-attempt2`` (onebit.tracking.replay), with the values the record's history holds. Read back from the files
the loggers wrote (csv, TensorBoard's own event reader)."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest
from conftest import only_record, run_train

ARGS = ["model.width=4", "trainer.deterministic=true", "threads=1", "epochs=3", "pretrain=none", "bn_retrain=false"]
KEYS = ("train/loss", "train/top1", "val/loss", "val/top1", "val/top5")


def csv_rows(folder: Path) -> list[dict]:
    with (folder / "metrics.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def tensorboard_rows(folder: Path) -> list[dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    by_step: dict[int, dict] = {}
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            by_step.setdefault(ev.step, {"step": ev.step})[tag] = ev.value
    return [by_step[s] for s in sorted(by_step)]


READ = {"csv": csv_rows, "tensorboard": tensorboard_rows}


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_a_resumed_stage_logs_the_epoch_its_first_attempt_missed(tmp_path, logger):
    args = [*ARGS, f"logger={logger}", f"output_root={tmp_path}"]
    killed = run_train(args, env={"ONEBIT_KILL_AT": "epoch_end:binary:1", "ONEBIT_KILL_SIGNAL": "TERM"})
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr[-2000:]
    again = run_train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec.attempts == 2 and rec.status == "finished"
    history = {h["epoch"]: h for h in rec.stages["binary"].history}
    assert sorted(history) == [0, 1, 2] and all(k in h for h in history.values() for k in KEYS)
    root = Path(rec.run_dir, logger)
    assert sorted(p.name for p in root.iterdir()) == ["binary", "binary-attempt2"]
    first, second = READ[logger](root / "binary"), READ[logger](root / "binary-attempt2")
    for key in KEYS:
        one = [(int(r["epoch"]), r[key]) for r in first if key in r and "epoch" in r]
        two = [(int(r["epoch"]), r[key]) for r in second if key in r and "epoch" in r]
        epochs = [e for e, _ in one + two]
        assert sorted(epochs) == [0, 1, 2], (key, one, two)  # every epoch, once
        for e, value in one + two:
            assert value == pytest.approx(history[e][key], rel=1e-6), (key, e)
    # the gap, filled in: epoch 1's train/* open the second version, at the step Lightning logged epoch 1's val/*
    assert [int(r["epoch"]) for r in first if "train/loss" in r] == [0]
    assert [int(r["epoch"]) for r in second if "train/loss" in r] == [1, 2]
    (val1,) = [r["step"] for r in first if r.get("epoch") == 1 and "val/top1" in r]
    assert [r["step"] for r in second if r.get("epoch") == 1 and "train/loss" in r] == [val1]
