"""Faults injected for real: idempotent sweeps (skip / retry), a killed joblib sweep (no orphan workers, resumed
by the same command), index integrity, the sweep summary's states, DDP on 2 CPU processes, parallel launchers,
determinism, unreachable W&B. (Kills at every named point of a recipe: tests/test_resume.py.)"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FAST, ROOT, compose_cfg, image_folder, run_train

from onebit.core.errors import ConfigError
from onebit.records.identity import job_key
from onebit.records.record import read_record
from onebit.training import jobs

# small but long enough to be killed mid-training: full digits epochs, 8-wide Bi-Real-18, deterministic
STEADY = ["model.width=8", "logger=none", "pretrain=none", "trainer.deterministic=true", "threads=1"]


def records(root: Path) -> list:
    return [read_record(p) for p in sorted(root.rglob("record.json"))]


def metrics(rec, stage: str = "binary") -> dict:
    return rec.stages[stage].metrics


def _image_folder(root: Path) -> None:
    image_folder(root, classes=("a", "b"), n=4, size=(40, 40))


def test_sweep_is_idempotent_skips_finished_and_retries_failed(tmp_path):
    good, missing = tmp_path / "good", tmp_path / "missing"
    _image_folder(good)
    common = ["-m", "data=folder", f"data.root={good},{missing}", "model.width=4", "epochs=1", "logger=none",
              "pretrain=none", f"output_root={tmp_path}", "study=idem"]
    first = run_train(common)
    assert first.returncode == 1 and "onebit sweep: 1 finished, 1 failed" in first.stdout, first.stderr[-2000:]
    assert "REFUSED" in first.stdout and str(missing) in first.stdout
    assert len(records(tmp_path)) == 1  # the refused job left no record that a table would show
    _image_folder(missing)  # fix the cause of the failure
    second = run_train(common)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "onebit sweep: 2 finished (1 skipped: finished before), 0 failed" in second.stdout
    recs = records(tmp_path)
    assert len(recs) == 2 and all(r.status == "finished" for r in recs)
    third = run_train(common)
    assert "onebit sweep: 2 finished (2 skipped: finished before), 0 failed" in third.stdout


def test_ddp_two_cpu_processes_one_record(tmp_path):
    r = run_train(["trainer=ddp", "trainer.devices=2", "model.width=4", "epochs=1", "pretrain=clip",
                   "logger=wandb", "logger.mode=offline", "+trainer.limit_train_batches=4",
                   "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", f"output_root={tmp_path}"],
                  timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 1 and recs[0].status == "finished"
    assert list(recs[0].stages) == ["pretrain", "binary"]
    assert recs[0].config["trainer"]["strategy"] == "ddp"
    run_dirs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1  # one output directory
    wandb_runs = sorted(p.name for p in (run_dirs[0] / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2  # one W&B run per stage, from rank zero only


def _sweep(tmp_path: Path, launcher: str) -> dict:
    r = run_train(["-m", "sign=approx,ste", f"launcher={launcher}", *STEADY, "epochs=2",
                   "+trainer.limit_train_batches=5", f"output_root={tmp_path / launcher}"], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "onebit sweep: 2 finished, 0 failed" in r.stdout
    return {rec.options["sign"]: metrics(rec) for rec in records(tmp_path / launcher)}


def test_joblib_launcher_matches_sequential(tmp_path):
    assert _sweep(tmp_path, "joblib") == _sweep(tmp_path, "basic")


def test_submitit_local_launcher(tmp_path):
    out = _sweep(tmp_path, "submitit_local")
    assert set(out) == {"approx", "ste"}


def test_same_seed_same_metrics(tmp_path):
    args = [*STEADY, "epochs=1", "+trainer.limit_train_batches=5", "resume=false", f"output_root={tmp_path}"]
    for _ in range(2):
        assert run_train(args).returncode == 0
    a, b = records(tmp_path)
    assert metrics(a) == metrics(b)


def test_wandb_online_without_network_goes_on_offline(tmp_path):
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    r = run_train(["logger=wandb", "logger.mode=online", "logger.settings.init_timeout=5", "model.width=4", "epochs=1",
                   "pretrain=none", "+trainer.limit_train_batches=2", f"output_root={tmp_path}"], env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "logging offline" in r.stderr
    (rec,) = records(tmp_path)
    assert rec.status == "finished" and rec.stages["binary"].wandb["mode"] == "offline"


def test_wandb_online_without_credentials_never_prompts(tmp_path):
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    r = run_train(["logger=wandb", "logger.mode=online", "model.width=4", "epochs=1", "pretrain=none",
                   "+trainer.limit_train_batches=2", f"output_root={tmp_path / 'o'}"], env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no W&B API key" in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_killed_joblib_sweep_leaves_no_orphans_and_resumes(tmp_path):
    """SIGKILL the process that runs a joblib sweep while both workers train: the workers exit (no orphan keeps
    training and holding job locks), and the same command resumes both jobs to the end."""
    args = ["-m", "sign=approx,ste", "launcher=joblib", "model.width=8", "logger=none", "pretrain=none", "epochs=6",
            f"output_root={tmp_path}"]
    parent = subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    holders = tmp_path / "index"
    deadline = time.time() + 300
    # both jobs recorded and one of them an epoch into training: kill then (waiting for both checkpoints let the
    # first job finish all its epochs on a loaded machine, while the second one was still starting)
    while time.time() < deadline and (len(list(tmp_path.rglob("record.json"))) < 2
                                      or not list(tmp_path.rglob("checkpoints/binary/last.ckpt"))):
        time.sleep(0.1)
    pids = [json.loads(p.read_text())["pid"] for p in holders.glob("*.holder.json")]
    assert len(pids) == 2 and parent.pid not in pids  # the jobs run in two worker processes
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(map(_alive, pids)):
        time.sleep(0.2)
    assert not any(map(_alive, pids)), "orphaned joblib workers are still running"
    index = jobs.JobIndex(tmp_path)
    keys = [p.name.removesuffix(".holder.json") for p in holders.glob("*.holder.json")]
    while time.time() < deadline and any(map(index.running, keys)):
        time.sleep(0.2)  # the OS releases a dead process's locks as it reaps it
    held = [k for k in keys if index.running(k)]
    assert not held, subprocess.run(["sh", "-c", f"ps -ef; fuser -v {holders}/*.lock 2>&1"], capture_output=True,
                                    text=True).stdout  # who still holds them
    again = run_train(args)
    assert again.returncode == 0 and "onebit sweep: 2 finished, 0 failed" in again.stdout, again.stderr[-2000:]
    recs = records(tmp_path)
    assert len(recs) == 2 and all(r.status == "finished" and r.attempts == 2 for r in recs)


def test_index_entry_of_another_job_is_ignored(tmp_path, caplog):
    a = compose_cfg([*FAST, "pretrain=none", "sign=approx"], tmp_path)
    rec_a, _ = jobs.run(a, tmp_path / "a", set())
    b = compose_cfg([*FAST, "pretrain=none", "sign=ste"], tmp_path)
    jobs.JobIndex(tmp_path).set(job_key(b), rec_a.run_dir)  # a damaged index: b's entry points at a's record
    with caplog.at_level(logging.WARNING, logger="onebit"):
        rec_b, action = jobs.run(b, tmp_path / "b", set())
    assert action == "started" and rec_b.job_key == job_key(b) and rec_b.run_dir == str(tmp_path / "b")
    assert f"belongs to job {rec_a.job_key}" in caplog.text
    assert read_record(Path(rec_a.run_dir) / "record.json") == rec_a  # a's record untouched


def test_sweep_summary_tells_states_apart(tmp_path):
    """finished / skipped / refused / failed / interrupted / running in another process / corrupt record."""
    cfg = compose_cfg([*FAST, "pretrain=none"], tmp_path)
    rec, _ = jobs.run(cfg, tmp_path / "done", set())
    jobs.run(cfg, tmp_path / "again", set())  # skipped
    state = lambda d: jobs.job_outcome(tmp_path / d, tmp_path)[0]  # noqa: E731
    assert (state("done"), state("again")) == ("finished", "skipped")
    # an interrupted record: running, nobody holds its lock
    data = json.loads(Path(rec.run_dir, "record.json").read_text())
    data["status"] = "running"
    Path(rec.run_dir, "record.json").write_text(json.dumps(data))
    assert state("done") == "interrupted"
    lock = jobs.JobIndex(tmp_path).hold(rec.job_key)  # ... and now another process runs it
    try:
        assert state("done") == "running elsewhere"
        assert f"process {os.getpid()}" in jobs.job_outcome(tmp_path / "done", tmp_path)[1]
    finally:
        lock.release()
    Path(rec.run_dir, "record.json").write_text('{"schema": 2, "job_key": ')  # torn by hand
    assert state("done") == "corrupt"
    refused = compose_cfg([*FAST, "epochs=0"], tmp_path)
    try:
        jobs.run(refused, tmp_path / "refused", set())
    except ConfigError:
        pass
    assert state("refused") == "refused" and not (tmp_path / "refused" / "record.json").exists()
