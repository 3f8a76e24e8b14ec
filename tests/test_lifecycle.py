"""A run's life (``onebit.records.lifecycle``): a signal interrupts a run, it does not fail it; the console says so in
one line; the same command resumes it into the record of an uninterrupted run; the record names every attempt and
its lines in the run's one log; time is the attempts' working time, not the pause between them; and a command that
ran no training (skipped, refused, a resumed attempt) leaves no directory behind. Real processes, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, only_record, run_train
from test_resume import essence

from onebit.records.lifecycle import TRANSITIONS, RunInterrupted, TransitionError, check_transition, interruption
from onebit.results.cells import summarize
from onebit.training.jobs import job_outcome

ARGS = ["model.width=4", "logger=none", "trainer.deterministic=true", "threads=1", "epochs=2", "pretrain=none"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    assert run_train([*ARGS, f"output_root={root}"]).returncode == 0
    return only_record(root)


def hydra_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(".hydra"))


@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
def test_a_signal_interrupts_and_the_same_command_resumes(tmp_path, uninterrupted, sig):
    args = [*ARGS, f"output_root={tmp_path}"]
    stopped = run_train(args, env={"ONEBIT_KILL_AT": "epoch_end:binary:0", "ONEBIT_KILL_SIGNAL": sig})
    signum = signal.Signals[f"SIG{sig}"]
    assert stopped.returncode == 128 + signum, stopped.stderr[-2000:]
    lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("onebit:")]
    assert len(lines) == 1 and lines[0].startswith(f"onebit: interrupted by SIG{sig} ("), stopped.stderr[-2000:]
    assert "recorded as interrupted, not failed: run the same command again to resume it" in lines[0]
    assert "Traceback" not in stopped.stderr
    rec = only_record(tmp_path)
    assert (rec.status, rec.stages["binary"].status, rec.error) == ("interrupted", "interrupted",
                                                                    f"interrupted by SIG{sig}")
    assert rec.run_dir in lines[0]
    assert [(a["status"], a["signal"]) for a in rec.attempt_log] == [("interrupted", f"SIG{sig}")]
    # the jobs' view (a sweep's summary) and the tables' view: interrupted, not failed
    assert job_outcome(Path(rec.run_dir))[0] == "interrupted"
    cell = summarize([rec], "test/top1")
    assert (cell.interrupted, cell.failed, cell.text()) == (1, 0, "1 interrupted")

    time.sleep(3.0)  # idle time between the interruption and the resume: not the run's time
    again = run_train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "over 2 attempts" in again.stdout
    after = only_record(tmp_path)
    assert essence(after) == essence(uninterrupted)
    assert (after.run_dir, after.run_id, after.attempts) == (rec.run_dir, rec.run_id, 2)
    log = after.attempt_log
    assert [(a["n"], a["action"], a["status"]) for a in log] == [(1, "started", "interrupted"),
                                                               (2, "resumed", "finished")]
    assert after.timings["seconds"] == pytest.approx(sum(a["seconds"] for a in log), abs=1e-3)
    assert after.timings["seconds"] < after.timings["ended"] - after.timings["started"] - 2.5
    # one log: both attempts, the second's lines from its offset on, in the run's directory
    text = Path(after.run_dir, "train.log").read_bytes()
    assert log[0]["log"] == log[1]["log"] == str(Path(after.run_dir, "train.log"))
    first, second = text[:log[1]["log_offset"]].decode(), text[log[1]["log_offset"]:].decode()
    assert f"interrupted by SIG{sig}" in first and "binary epoch 2/2" not in first
    assert "==== attempt 2 (resumed)" in second.splitlines()[0] and "binary epoch 2/2" in second
    # the resumed command's own Hydra directory held no run: it is gone
    assert hydra_dirs(tmp_path) == [Path(after.run_dir)]


def test_an_external_sigterm_mid_epoch_is_an_interruption(tmp_path):
    """`kill <pid>` (what SLURM and a shell send) while the process trains, at whatever moment it arrives."""
    args = [*ARGS, "epochs=200", f"output_root={tmp_path}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            logs = list(tmp_path.rglob("train.log"))
            if logs and "binary epoch 1/200" in logs[0].read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.count("onebit: interrupted by SIGTERM") == 1 and "Traceback" not in err
    rec = only_record(tmp_path)
    assert rec.status == "interrupted" and rec.attempt_log[0]["signal"] == "SIGTERM"
    assert rec.stages["binary"].status == "interrupted" and not rec.stages["binary"].history


def test_ctrl_c_stops_a_sweep_and_the_same_command_finishes_only_what_is_missing(tmp_path):
    args = ["-m", *ARGS, "epochs=1", "seed=0,1", f"output_root={tmp_path}"]
    stopped = run_train(args, env={"ONEBIT_KILL_AT": "epoch_end:binary:0", "ONEBIT_KILL_SIGNAL": "INT"})
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "finished jobs are skipped and this one resumes" in stopped.stderr
    (rec,) = [only_record(tmp_path)]          # the sweep stopped: the second job never started
    assert rec.status == "interrupted" and rec.options["seed"] == 0
    sweeps = tmp_path / "sweeps"
    again = run_train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    records = sorted((json.loads(p.read_text()) for p in tmp_path.rglob("record.json")),
                     key=lambda r: r["options"]["seed"])
    assert [(r["status"], r["attempts"]) for r in records] == [("finished", 2), ("finished", 1)]
    dirs_before = sorted(p for p in sweeps.rglob("*") if p.is_dir())
    # the finished sweep, run again: everything skipped, no new directory
    third = run_train(args)
    assert third.returncode == 0 and "2 finished (2 skipped: finished before)" in third.stdout
    assert "no new run: no sweep directory kept" in third.stdout
    assert sorted(p for p in sweeps.rglob("*") if p.is_dir()) == dirs_before
    # every Hydra directory left is a run's own
    assert {str(d) for d in hydra_dirs(tmp_path)} == {r["run_dir"] for r in records}


def test_a_skipped_or_refused_single_run_leaves_no_directory(tmp_path):
    args = [*ARGS, "epochs=1", f"output_root={tmp_path}"]
    assert run_train(args).returncode == 0
    (run_dir,) = hydra_dirs(tmp_path)
    skipped = run_train(args)
    assert skipped.returncode == 0 and "skipped: this job finished before" in skipped.stdout
    refused = run_train([*args, "threads=-1"])
    assert refused.returncode == 2
    assert hydra_dirs(tmp_path) == [run_dir]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run_dir.parent.name]


def test_the_lifecycle_allows_only_its_transitions():
    assert TRANSITIONS["finished"] == set()
    for old, new in [("finished", "running"), ("finished", "failed"), (None, "finished"), ("failed", "finished"),
                     ("interrupted", "failed")]:
        with pytest.raises(TransitionError, match=f"from {old!r} to {new!r}"):
            check_transition(old, new)
    for old, new in [(None, "running"), ("running", "interrupted"), ("interrupted", "running"),
                     ("running", "running"), ("failed", "running")]:
        check_transition(old, new)
    stop = RunInterrupted(signal.SIGTERM)
    assert interruption(stop) is stop and interruption(ValueError("x")) is None  # an error of the work: failed
    try:  # an error raised while handling the interruption (W&B's service gone): still that interruption
        try:
            raise stop
        except RunInterrupted:
            raise OSError("broken pipe")  # noqa: B904
    except OSError as e:
        assert interruption(e) is stop
    assert RunInterrupted(signal.SIGINT).exit_code == 130
