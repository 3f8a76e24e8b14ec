"""A resumed stage is one W&B run with one history: a job killed mid-stage (SIGKILL, a real process) and run again
writes a second offline directory for the same W&B run whose ``_step`` continues after the first's, the two
attempts' per-epoch rows together are the uninterrupted run's, and onebit-sync hands the attempts to
``wandb sync`` in the order they ran (wandb 0.31 uploads one run's files of one call in order of start time).
Everything is read back from the ``.wandb`` files W&B wrote (conftest.wandb_records, not onebit's own reader)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import complete_wandb_log, only_record, run_cli, run_train, wandb_records

from onebit.cli import sync

# deterministic full digits epochs, offline W&B, one stage. wandb-core writes a run's .wandb file every
# x_transaction_log_flush_interval seconds (onebit: 0.5, wandb_run.FLUSH_SECONDS); what a killed process logged
# since the last write is lost. Here it writes every 0.05 s, well within an epoch (~0.5 s on 2 cores), so that the
# killed attempt's file holds its first epoch and what the test reads does not depend on the machine's speed.
ARGS = ["model.width=4", "trainer.deterministic=true", "threads=1", "epochs=3", "logger=wandb", "logger.mode=offline",
        "pretrain=none", "bn_retrain=false", "+logger.settings.x_transaction_log_flush_interval=0.05"]
METRICS = ("train/loss", "train/top1", "val/loss", "val/top1", "val/top5")


def history(run_dir: Path) -> list[dict]:
    """The history rows of an offline W&B run directory (``_step`` and every logged key), in the order written."""
    (log,) = run_dir.glob("*.wandb")
    return [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            for r in wandb_records(log) if r.WhichOneof("record_type") == "history"]


def start_time(run_dir: Path) -> float:
    (log,) = run_dir.glob("*.wandb")
    (run,) = [r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run"]
    return run.start_time.seconds + run.start_time.nanos / 1e9


def per_epoch(rows: list[dict]) -> dict[str, list[tuple]]:
    """Each training/validation metric's (epoch, trainer/global_step, value), in the order logged."""
    return {k: [(r["epoch"], r["trainer/global_step"], r[k]) for r in rows if k in r] for k in METRICS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    r = run_train([*ARGS, f"output_root={root}"])
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = Path(only_record(root).run_dir, "wandb").glob("offline-run-*")
    return history(run_dir)


@pytest.mark.parametrize("sig,at", [("TERM", 1), ("KILL", 1), ("TERM", 2)])
def test_killed_stage_continues_its_wandb_steps(tmp_path, uninterrupted, sig, at):
    """SIGTERM (kill, SLURM): the run is recorded as interrupted and its W&B run finished, so every row it logged
    is in its file. SIGKILL: nothing can be finished; rows logged within the flush interval before the kill can be
    lost from its file. Either way the kill point (``epoch_end:binary:<at>``) stops the attempt after that epoch's
    checkpoint and before Lightning logs its train/*: the resumed attempt logs what the first one's file lacks from
    the stage's history (onebit.tracking.replay.ReplayMissingEpochs), so no epoch is missing. At the last
    epoch (2) the resumed fit trains nothing (Lightning skips its on_train_start) and still fills it in."""
    args = [*ARGS, f"output_root={tmp_path}"]
    killed = run_train(args, env={"ONEBIT_KILL_AT": f"epoch_end:binary:{at}", "ONEBIT_KILL_SIGNAL": sig})
    expected = 128 + signal.SIGTERM if sig == "TERM" else -signal.SIGKILL
    assert killed.returncode == expected, killed.stderr[-2000:]
    again = run_train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec.attempts == 2 and rec.status == "finished"
    dirs = sorted(Path(rec.run_dir, "wandb").glob("offline-run-*"), key=start_time)
    assert len(dirs) == 2 and all(d.name.endswith(f"-{rec.run_id}-binary") or f"-{rec.run_id}-binary-" in d.name
                                  for d in dirs), dirs
    first, second = history(dirs[0]), history(dirs[1])
    assert first and second, "the killed attempt's rows reached its .wandb file (onebit's flush interval)"

    # steps: each attempt's increase, and attempt 2's start after attempt 1's last (no overlap)
    steps1, steps2 = [r["_step"] for r in first], [r["_step"] for r in second]
    assert steps1 == sorted(set(steps1)) and steps2 == sorted(set(steps2))
    assert steps2[0] == steps1[-1] + 1, (steps1, steps2)
    # the per-epoch history: together the attempts hold every epoch of the uninterrupted run, each with its values
    # and trainer/global_step. Attempt 2 logs what attempt 1's file lacks first (the epochs its checkpoint holds:
    # train/* of the killed epoch, logged by Lightning after the kill point; under SIGKILL also the rows wandb-core
    # had not written yet), then trains on. That epoch's checkpoint is written in a thread and may not reach the disk
    # before a SIGKILL: then the epoch is trained and logged again, with the same values and global steps.
    whole, one, two = per_epoch(uninterrupted), per_epoch(first), per_epoch(second)
    for key in METRICS:
        assert [e for e, _, _ in whole[key]] == [0, 1, 2], key
        assert one[key] == whole[key][:len(one[key])], key  # the head, as far as the killed attempt wrote it
        assert all(row in whole[key] for row in two[key]), key
        assert [e for e, _, _ in two[key]] == sorted({e for e, _, _ in two[key]}), key  # each epoch once, in order
        assert {e for e, _, _ in one[key]} | {e for e, _, _ in two[key]} == {0, 1, 2}, key  # no epoch missing
        if sig == "TERM":  # a finished W&B run: nothing lost, nothing logged twice
            assert one[key] + two[key] == whole[key], key
    if sig == "TERM":  # the gap, filled in: the killed epoch's train/* come first in attempt 2
        assert [e for e, _, _ in one["train/loss"]] == list(range(at))
        assert [e for e, _, _ in two["train/loss"]] == list(range(at, 3))
    # onebit-sync --dry-run: the run's two attempts, in the order they ran, even when the folder names say otherwise
    late = dirs[1].with_name(dirs[1].name.replace("offline-run-", "offline-run-0000"))  # sorts before attempt 1
    shutil.move(dirs[1], late)
    r = run_cli(sync.main, ["--root", tmp_path, "--dry-run"], env={"WANDB_SILENT": None})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"onebit sync: 1 offline W&B run(s) in 2 folders under {tmp_path}"
    head = lines.index(f"  onebit/{rec.run_id}-binary: 2 attempts, uploaded in the order they ran")
    assert lines[head + 1] == f"    1. {dirs[0].relative_to(tmp_path)}"
    assert lines[head + 2] == f"    2. {late.relative_to(tmp_path)}"
    assert "Would sync 2 run(s)" in r.stdout + r.stderr  # wandb sync's own dry run: both files, one call
    assert sync.offline_runs(tmp_path) == [dirs[0], late]


def test_replayed_rows_get_the_steps_lightning_logs_at(uninterrupted):
    """missing_rows: without any earlier row, an epoch's trainer/global_step is computed as Lightning logs epoch-end
    metrics (the uninterrupted run's own steps); with one, it is taken from it; logged keys are left out."""
    from onebit.tracking.replay import missing_rows

    steps = [s for _, s, _ in per_epoch(uninterrupted)["val/top1"]]
    history = [{"epoch": e, "train/loss": 1.0 + e, "val/top1": 0.5, "seconds": 0.3} for e in range(3)]
    done = steps[-1] + 1  # what the trainer restores after the last epoch
    assert missing_rows(history, {}, done) == [(s, {"train/loss": 1.0 + e, "val/top1": 0.5, "epoch": e})
                                               for e, s in enumerate(steps)]
    logged = {0: {"train/loss": 1.0, "val/top1": 0.5, "epoch": 0}, 1: {"val/top1": 0.5, "trainer/global_step": 77}}
    assert missing_rows(history, logged, done) == [(77, {"train/loss": 2.0, "epoch": 1}),
                                                   (steps[2], {"train/loss": 3.0, "val/top1": 0.5, "epoch": 2})]
    assert missing_rows([], {}, 0) == []


# ----------------------------------------------------------------------------------------------------------
# The ordering, grouping and batching of onebit-sync on real offline runs written here by wandb itself
# ----------------------------------------------------------------------------------------------------------


def finished(run) -> Path:
    """Finish ``run`` and return its folder once its ``.wandb`` file holds the exit record: ``finish()`` can return
    before wandb-core has written the file (seen with wandb 0.31: 7 bytes right after, the whole file 0.5 s later)."""
    log = Path(run.settings.sync_file)
    run.finish()
    complete_wandb_log(log)
    return log.parent


def offline_run(wandb_dir: Path, run_id: str, rows: int, project: str = "onebit") -> Path:
    """A real offline W&B run (``resume="allow"``, as onebit starts them) with ``rows`` history rows; its folder."""
    import wandb

    run = wandb.init(mode="offline", id=run_id, resume="allow", dir=str(wandb_dir), project=project,
                     reinit="finish_previous")
    for i in range(rows):
        run.log({"x": i})
    return finished(run)


def test_sync_orders_attempts_by_start_time_not_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    a1 = offline_run(tmp_path / "job" / "a", "abc-binary", 2)
    other = offline_run(tmp_path / "job" / "b", "xyz-binary", 1)
    a2 = offline_run(tmp_path / "job" / "a", "abc-binary", 1)
    a3 = offline_run(tmp_path / "job" / "a", "abc-binary", 1)
    # names that sort against the order the attempts ran (a clock moved back, a copied folder, a `-1` suffix)
    a1 = a1.rename(a1.with_name("offline-run-29990101_000000-abc-binary"))
    a3 = a3.rename(a3.with_name("offline-run-00000101_000000-abc-binary"))
    assert sorted([a1, a2, a3]) != [a1, a2, a3]
    # a folder whose .wandb holds only the 7-byte header (a process killed before wandb-core wrote anything)
    empty = tmp_path / "job" / "c" / "wandb" / "offline-run-20260101_000000-dead-binary"
    empty.mkdir(parents=True)
    (empty / "run-dead-binary.wandb").write_bytes((a2 / "run-abc-binary.wandb").read_bytes()[:7])

    problems: list[Path] = []
    runs = sync.offline_attempts(tmp_path, problems=problems)
    assert runs == {"onebit/abc-binary": [a1, a2, a3], "onebit/xyz-binary": [other]}
    assert problems == [empty]
    assert sync.offline_runs(tmp_path) == [a1, a2, a3, other]
    # -p/-e as `wandb sync` applies them: the same run under another project
    assert list(sync.offline_attempts(tmp_path, project="p", entity="e")) == ["e/p/abc-binary", "e/p/xyz-binary"]
    # a run's attempts are never split over two `wandb sync` calls
    assert sync.batches(runs, size=2) == [[a1, a2, a3], [other]]
    assert sync.batches(runs, size=4) == [[a1, a2, a3, other]]
    assert sync.batches({"r": [a1], "s": [a2, a3], "t": [other]}, size=2) == [[a1], [a2, a3], [other]]

    r = run_cli(sync.main, ["--root", tmp_path, "--dry-run"])
    assert r.returncode == 0
    assert r.stdout.splitlines()[:6] == [
        f"onebit sync: 2 offline W&B run(s) in 4 folders under {tmp_path}",
        "  onebit/abc-binary: 3 attempts, uploaded in the order they ran",
        f"    1. {a1.relative_to(tmp_path)}", f"    2. {a2.relative_to(tmp_path)}",
        f"    3. {a3.relative_to(tmp_path)}", f"  onebit/xyz-binary: {other.relative_to(tmp_path)}"]
    assert r.stderr.splitlines() == [f"onebit: warning: {empty} left out: its .wandb file holds no W&B run record "
                                     "(its process ended as it started)"]
    # an attempt uploaded before is left out of the listing (wandb sync skips it by its marker)
    (a1 / "run-abc-binary.wandb.synced").touch()
    r = run_cli(sync.main, ["--root", tmp_path, "--dry-run"])
    assert r.stdout.splitlines()[1:4] == [
        "  onebit/abc-binary: 3 attempts, uploaded in the order they ran (1 uploaded before)",
        f"    1. {a2.relative_to(tmp_path)}", f"    2. {a3.relative_to(tmp_path)}"]


def test_a_first_attempt_logs_from_step_zero(tmp_path, monkeypatch):
    """continue_steps changes nothing for a run without earlier attempts, and moves a resumed one past them."""
    import wandb

    from onebit.tracking.wandb_resume import continue_steps, earlier_attempts, last_step

    monkeypatch.setenv("WANDB_SILENT", "true")
    first = wandb.init(mode="offline", id="s-binary", resume="allow", dir=str(tmp_path), project="onebit")
    assert earlier_attempts(first) == [] and continue_steps(first) is None
    for i in range(3):
        first.log({"x": i})
    folder1 = finished(first)
    second = wandb.init(mode="offline", id="s-binary", resume="allow", dir=str(tmp_path), project="onebit")
    assert earlier_attempts(second) == [(folder1 / "run-s-binary.wandb").resolve()]
    assert last_step(folder1 / "run-s-binary.wandb") == 2
    assert continue_steps(second) == 3
    second.log({"x": 10})
    second.log({"x": 11})
    folder2 = finished(second)
    assert [(r["_step"], r["x"]) for r in history(folder1)] == [(0, 0), (1, 1), (2, 2)]
    assert [(r["_step"], r["x"]) for r in history(folder2)] == [(3, 10), (4, 11)]
    assert os.path.samefile(folder2, Path(tmp_path, "wandb", "latest-run"))
