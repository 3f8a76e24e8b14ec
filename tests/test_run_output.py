"""What a run shows (issue 12, "Seeing a run"): one log line per epoch in Hydra's job log (and on the console when
no bar is shown), a progress bar per stage under a real pseudo-terminal, resume and cache-hit lines, the summary of
a cache hit, print_config, and runs without warnings.

These runs leave PYTHONWARNINGS unset (unlike conftest.run_train): a warning a user would see fails them."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, ROOT, run_train

from onebit.records.record import RunRecord, StageRecord, read_record
from onebit.tracking import progress
from onebit.training import jobs

EPOCH = re.compile(r"\[onebit\]\[INFO\] - (\w+) epoch (\d+)/(\d+): train loss (\S+) top-1 (\S+), val loss (\S+) "
                   r"top-1 (\S+), ([\d.]+)s$")
NOISE = re.compile(r"warn|\btips?\b|deprecat|\.py:\d+: ", re.IGNORECASE)  # warnings print as "<file>.py:<line>: "


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "WANDB_SILENT")}
    return {**e, **extra}


def train(args: list[str], **extra_env):
    """``python src/train.py args``, a real process, with pipes (non-interactive) and warnings on."""
    return run_train(args, env={"PYTHONWARNINGS": None, "WANDB_SILENT": None, **extra_env}, timeout=1800,
                     subprocess=True)


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


def records(root: Path) -> list[RunRecord]:
    return sorted((read_record(p) for p in root.rglob("record.json")), key=lambda r: r.timings["started"])


def job_log(record: RunRecord) -> str:
    """Hydra's log of the job that created the record (its job directory is the run directory)."""
    return (Path(record.run_dir) / "train.log").read_text()


def resumed_job_log(root: Path) -> str:
    """The lines of the attempt that resumed the record: the run's own log from that attempt's offset on (the
    resumed command's Hydra directory held no run and is gone)."""
    (rec,) = records(root)
    assert [a["action"] for a in rec.attempt_log] == ["started", "resumed"]
    assert not [p for p in root.rglob("job.json") if json.loads(p.read_text())["action"] == "resumed"]
    return Path(rec.attempt_log[1]["log"]).read_bytes()[rec.attempt_log[1]["log_offset"]:].decode()


def epoch_lines(text: str) -> list[tuple]:
    return [m.groups() for m in map(EPOCH.search, text.splitlines()) if m]


# ----------------------------------------------------------------------------------------------------------
# A non-interactive run (pipes), then a second job that reuses its twin
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    root = tmp_path_factory.mktemp("piped")
    first = train([*FAST, "epochs=2", "pretrain.epochs=1", "bn_retrain=true", "logger=csv", "print_config=true",
                   f"output_root={root}"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = train([*FAST, "epochs=1", "logger=none", f"output_root={root}"])  # same twin (epochs: later stages)
    assert second.returncode == 0, second.stderr[-3000:]
    first_rec, second_rec = records(root)
    return first, first_rec, second, second_rec


def test_job_log_has_one_line_per_epoch_per_stage_matching_the_record(piped):
    out, rec, _, _ = piped
    lines = epoch_lines(job_log(rec))
    assert [(s, int(e), int(n)) for s, e, n, *_ in lines] == [
        ("pretrain", 1, 1), ("binary", 1, 2), ("binary", 2, 2), ("bn_retrain", 1, 1)]
    for stage, epoch, _, *values, seconds in lines:
        h = rec.stages[stage].history[int(epoch) - 1]
        for key, text in zip(("train/loss", "train/top1", "val/loss", "val/top1"), values):
            assert float(text) == pytest.approx(h[key], abs=5e-5), (stage, epoch, key)
        assert seconds == f"{h['seconds']:.1f}"
    log = job_log(rec)
    assert "stage 1/3 pretrain: twin model (A32/W32), 1 epoch" in log
    assert "stage 2/3 binary: binary model (A1/W1), 2 epochs, initialised from pretrain" in log
    bn = rec.stages["bn_retrain"]
    assert f"stage 3/3 bn_retrain finished: {progress.stage_result(bn)}" in log
    assert re.search(r"val top-1 [\d.]+ \(best [\d.]+\), test top-1 [\d.]+, [\d.]+s$", progress.stage_result(bn))
    # no bar without a terminal: the console (stdout) has each line once, and no tqdm output anywhere
    assert epoch_lines(out.stdout) == lines
    assert "it/s" not in out.stdout + out.stderr


def test_print_config_prints_the_composed_config_and_logs_it(piped):
    out, rec, second, _ = piped
    head = out.stdout.split("\n[", 1)[0]  # printed before the first log line
    assert head.startswith("# onebit config (resolved)\n")
    for text in ("print_config: true", "# model: bireal18\nmodel:\n  _target_: onebit.nn.models.BiRealResNet",
                 "# trainer: cpu\ntrainer:", "  accelerator: cpu", "epochs: 2"):
        assert text in head, text
    assert f"output_root: {Path(rec.run_dir).parents[2]}" in head  # resolved
    assert head.count("model:\n") == 1
    assert "composed config:\n# onebit config (resolved)" in job_log(rec)
    assert "# onebit config" not in second.stdout  # print_config=false (default): nothing


def test_cache_hit_says_what_it_saved_and_the_summary_shows_the_time_it_took(piped):
    _, first, out, rec = piped
    st = rec.stages["pretrain"]
    assert st.cache["hit"] and st.cache["saved_seconds"] == first.stages["pretrain"].seconds
    assert st.seconds == st.cache["wait_seconds"] < first.stages["pretrain"].seconds
    took = f", {st.seconds:.1f}s (cached twin: saved {st.cache['saved_seconds']:.1f}s)"
    assert re.search(rf"stage 1/2 pretrain reused the cached twin {st.cache['key']} \(trained by "
                     rf"{re.escape(first.run_dir)}\): val top-1 .*{re.escape(took)}$", job_log(rec), re.MULTILINE)
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("  pretrain ")]
    assert line.endswith(took)
    assert [s for s, *_ in epoch_lines(job_log(rec))] == ["binary"]  # nothing trained for the twin


@pytest.mark.parametrize("which", ["csv (first job)", "none (second job)"])
def test_runs_are_quiet(piped, which):
    out = piped[0] if which.startswith("csv") else piped[2]
    assert noise(out.stderr) == [] and noise(out.stdout) == []
    assert out.stderr == ""  # every line of a non-interactive run is a log line or the summary, on stdout


def test_default_run_with_wandb_is_quiet(tmp_path):
    fast = [o for o in FAST if not o.startswith("logger=")]
    out = train([*fast, "pretrain=none", f"output_root={tmp_path}"], WANDB_MODE="offline")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == "" and noise(out.stdout) == []


# ----------------------------------------------------------------------------------------------------------
# An interactive run: a real process on a pseudo-terminal
# ----------------------------------------------------------------------------------------------------------


def run_on_terminal(args: list[str], deadline: float = 1800) -> tuple[int, str]:
    """Run ``python src/train.py args`` with stdin/stdout/stderr on a pseudo-terminal (160 columns); returns the
    exit code and everything it wrote."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=ROOT, env=env(),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, end = [], time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_terminal_shows_a_bar_per_stage_and_the_epoch_lines_go_to_the_log_only(tmp_path):
    rc, text = run_on_terminal([*FAST, "epochs=2", "pretrain.epochs=1", f"output_root={tmp_path}"])
    assert rc == 0, text[-3000:]
    (rec,) = records(tmp_path)
    # the bars: named by stage and epoch, with the loss and val top-1 of the record's last epoch
    last = rec.stages["binary"].history[-1]
    assert re.search(rf"binary 2/2: 100%\|.*\| 3/3 \[.*loss={last['train/loss']:.4f}, "
                     rf"val_top1={last['val/top1']:.4f}\]", text), text[-3000:]
    assert re.search(r"pretrain 1/1: 100%\|.*\| 3/3 \[", text)
    assert "binary val" in text and "binary test" in text and "Epoch 0" not in text and "DataLoader" not in text
    # the per-epoch lines: in the job's log, not on the terminal (the bar shows them); stage lines on both
    assert len(epoch_lines(job_log(rec))) == 3 and epoch_lines(text.replace("\r", "\n")) == []
    assert "stage 2/2 binary: binary model (A1/W1), 2 epochs" in text
    assert noise(text) == []


def test_want_bar_auto_is_a_terminal_check_and_true_false_force(monkeypatch):
    assert progress.want_bar(True) is True and progress.want_bar(False) is False
    assert progress.want_bar(None) is False  # pytest captures stderr: not a terminal
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert progress.want_bar(None) is True
        monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP helper rank
        assert progress.want_bar(None) is False
        monkeypatch.undo()
    os.close(master)


def test_file_only_lines_skip_console_handlers(tmp_path, capsys):
    root = logging.getLogger()
    console, file = logging.StreamHandler(sys.stdout), logging.FileHandler(tmp_path / "job.log")
    old_level = root.level
    root.addHandler(console), root.addHandler(file), root.setLevel(logging.INFO)
    try:
        progress.info_to_file("only in the file")
        progress.log.info("in both")
    finally:
        root.removeHandler(console), root.removeHandler(file), root.setLevel(old_level)
        file.close()
    assert capsys.readouterr().out == "in both\n"
    assert (tmp_path / "job.log").read_text() == "only in the file\nin both\n"


# ----------------------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------------------


def test_resumed_job_says_from_which_stage_and_epoch(tmp_path):
    args = [*FAST, "epochs=3", "pretrain.epochs=1", f"output_root={tmp_path}"]
    killed = train(args, ONEBIT_KILL_AT="epoch_end:binary:1")
    assert killed.returncode == -signal.SIGKILL
    again = train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    (rec,) = records(tmp_path)
    ckpt = Path(rec.run_dir) / "checkpoints" / "binary" / "last.ckpt"
    assert [s for s, *_ in epoch_lines(job_log(rec))][:2] == ["pretrain", "binary"]  # the first attempt's job
    log = resumed_job_log(tmp_path)
    assert f"resuming (attempt 2) run {rec.run_dir}: pretrain -> binary" in log
    assert "stage 1/2 pretrain: finished in an earlier attempt, skipped" in log
    # the checkpoint of epoch 1 is complete; epoch 2's may still have been in the writer thread at the kill
    m = re.search(rf"resuming stage binary at epoch ([23])/3 from {re.escape(str(ckpt))}$", log, re.MULTILINE)
    assert m, log
    resumed_at = int(m.group(1))
    after = log[m.end():]
    assert [int(e) for s, e, *_ in epoch_lines(after)] == list(range(resumed_at, 4))
    assert m.group(0) in again.stdout
    assert noise(again.stderr) == []


def test_resume_after_the_last_epoch_says_it_only_tests(tmp_path):
    args = [*FAST, "epochs=1", "pretrain=none", f"output_root={tmp_path}"]
    assert train(args, ONEBIT_KILL_AT="test:binary").returncode == -signal.SIGKILL
    again = train(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resuming stage binary after its last epoch \(1/1\), to test it from \S+last\.ckpt$",
                     again.stdout, re.MULTILINE), again.stdout
    assert epoch_lines(again.stdout) == []


# ----------------------------------------------------------------------------------------------------------
# The summary of records written before saved_seconds
# ----------------------------------------------------------------------------------------------------------


def test_summary_of_an_older_cache_hit_record_shows_the_saved_time_not_as_its_own():
    """Before ``cache.saved_seconds``, a cache hit's ``seconds`` held the twin's original training time."""
    old = StageRecord("pretrain", "twin", "cache", 1, "finished", {"val/top1": 0.5}, seconds=16.9,
                      cache={"key": "k", "hit": True, "wait_seconds": 0.12})
    new = StageRecord("pretrain", "twin", "cache", 1, "finished", {"val/top1": 0.5}, seconds=0.12,
                      cache={"key": "k", "hit": True, "wait_seconds": 0.12, "saved_seconds": 16.9})
    for st in (old, new):
        rec = RunRecord(job_key="k", run_id="r", study="s", run_dir="/x", options={}, config={}, status="finished",
                        stages={"pretrain": st}, timings={"seconds": 1.0})
        assert jobs.summary_lines(rec)[1].endswith(", 0.1s (cached twin: saved 16.9s)")
