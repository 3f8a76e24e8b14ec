"""onebit on a real SLURM cluster (no mocks): the one-node cluster of tests/cluster/start_slurm.sh (the
``slurm_cluster`` fixture, tests/conftest_slurm.py) runs plain jobs, a onebit multirun through
``launcher=submitit_slurm`` that gives the same records and tables as the basic launcher, and refuses a request no
node can satisfy in one line instead of leaving it pending forever.

Tier: ``slurm`` and ``slow`` (a cluster start, ~1 min more where apt-get must install slurm-wlm and munge, and real
processes): not in ``pytest -m "not slow"``, in the full suite (``python -m pytest``, CI); ``pytest -m slurm`` runs
these alone."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_FULL, run_cli, run_train
from conftest_slurm import slurm_cluster  # noqa: F401 (the fixture)
from test_resume import essence

from onebit.cli.tables import main as tables
from onebit.records.record import read_record

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

# the test cluster's node: 1 CPU, 1 GB and no GPU per job fit it (conf/launcher/submitit_slurm.yaml asks for more)
FITS = ["hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
# two seeds of a tiny but full (not smoke) run, deterministic: the same numbers under every launcher
SWEEP = ["-m", "seed=0,1", "study=slurm", *TINY_FULL, "epochs=2", "pretrain=none", "trainer.deterministic=true"]


def sh(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_batch_job_and_srun_return_their_output(tmp_path):
    out = tmp_path / "job.out"
    r = sh("sbatch", "--wait", "--parsable", "-p", "debug", "-c", "1", "--mem=100M", "-o", str(out),
           "--wrap", "echo job=$SLURM_JOB_ID node=$SLURMD_NODENAME cpus=$SLURM_CPUS_PER_TASK; echo $((6 * 7))")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    assert out.read_text().split() == [f"job={job}", f"node={socket.gethostname().split('.')[0]}", "cpus=1", "42"]
    assert "JobState=COMPLETED" in sh("scontrol", "show", "job", "-o", job).stdout
    r = sh("srun", "-p", "debug", "-n", "1", "-c", "1", "--mem=100M", "python3", "-c", "print(6 * 7)")
    assert (r.returncode, r.stdout) == (0, "42\n"), r.stderr


def _job_states(job: str, wait_s: float = 30) -> list[str]:
    """The states of the tasks of a job array once none is running (submitit returns when a task has written its
    result, a moment before its batch script ends)."""
    deadline = time.monotonic() + wait_s
    while True:
        states = re.findall(r"JobState=(\w+)", sh("scontrol", "show", "job", "-o", job).stdout)
        if not {"PENDING", "RUNNING", "COMPLETING"} & set(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def _records(root) -> dict:
    recs = [read_record(p) for p in sorted(root.rglob("record.json"))]
    assert len(recs) == 2 and all(r.status == "finished" and r.smoke == [] for r in recs), recs
    return {r.options["seed"]: r for r in recs}


def test_multirun_on_slurm_matches_the_basic_launcher(tmp_path):
    slurm, basic = tmp_path / "slurm", tmp_path / "basic"
    r = run_train([*SWEEP, "launcher=submitit_slurm", *FITS, f"output_root={slurm}"], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "onebit sweep: 2 finished, 0 failed" in r.stdout
    on_slurm = _records(slurm)
    # each job ran as a task of one SLURM job array, which the controller saw complete; submitit's files (batch
    # script, logs, results) are under <sweep dir>/.submitit/<job>_<task>/
    (sweep,) = (slurm / "sweeps" / "slurm").iterdir()
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert len(tasks) == 2 and tasks[0].split("_")[0] == tasks[1].split("_")[0], tasks
    for rec in on_slurm.values():
        assert rec.attempt_log[-1]["argv"][0].endswith("submitit/core/_submit.py")
    assert _job_states(tasks[0].split("_")[0]) == ["COMPLETED", "COMPLETED"]

    r = run_train([*SWEEP, "launcher=basic", f"output_root={basic}"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    on_basic = _records(basic)
    for seed in (0, 1):
        assert on_slurm[seed].job_key == on_basic[seed].job_key
        assert on_slurm[seed].final_stage.metrics == on_basic[seed].final_stage.metrics
    a, b = (run_cli(tables, ["study", "--study", "slurm", "--root", root, "--format", "csv"])
            for root in (slurm, basic))
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "(n=2)" in a.stdout


@pytest.mark.parametrize("ask, why", [
    ("hydra.launcher.cpus_per_task=64", "Requested node configuration is not available"),
    ("hydra.launcher.mem_gb=1000", "Requested node configuration is not available"),
    ("hydra.launcher.gpus_per_node=1", "Invalid generic resource (gres) specification"),
])
def test_request_the_cluster_cannot_satisfy_is_one_line(tmp_path, ask, why):
    r = run_train([*SWEEP, "launcher=submitit_slurm", *FITS, ask, f"output_root={tmp_path}"], timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"onebit: error: SLURM cannot run these jobs ({why}): asked (hydra.launcher.*) ")
    key, value = ask.removeprefix("hydra.launcher.").split("=")
    assert f" {key}={value}," in line and re.search(r"partition debug \(up, 1 nodes\) offers per node: \d+ CPUs", line)
    assert not list(tmp_path.rglob("record.json")) and not list(tmp_path.rglob(".submitit"))  # nothing submitted


# ----------------------------------------------------------------------------------------------------------
# Preemption, requeue, scancel: a job stopped by SLURM resumes from its last checkpoint
# ----------------------------------------------------------------------------------------------------------

# 2 deterministic epochs of one binary stage; the kill point stops (SIGSTOP) each job after its first epoch's
# checkpoint, once: the resumed attempt starts at epoch 2, past the point
INTERRUPTIBLE = [*TINY_FULL, "epochs=2", "pretrain=none", "trainer.deterministic=true"]
STOP_AFTER_EPOCH_1 = {"ONEBIT_KILL_AT": "epoch_end:binary:0", "ONEBIT_KILL_SIGNAL": "STOP"}


def _stopped_tasks(tag: str) -> dict[int, dict]:
    """{array index: {pid, job, restarts}} of this test's SLURM tasks (environment ONEBIT_TEST_TAG=tag) that the
    kill point stopped (state T)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
                continue
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("ONEBIT_TEST_TAG") == tag and "SLURM_ARRAY_TASK_ID" in env:
            found[int(env["SLURM_ARRAY_TASK_ID"])] = {
                "pid": int(proc.name), "job": f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}",
                "restarts": int(env.get("SLURM_RESTART_COUNT") or 0)}
    return found


def _sweep_process(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    e = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    return subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=cwd, env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _restarts(job: str) -> tuple[str, int]:
    out = sh("scontrol", "show", "job", "-o", job).stdout
    return re.search(r"JobState=(\w+)", out).group(1), int(re.search(r"Restarts=(\d+)", out).group(1))


def _attempts(rec) -> list[tuple]:
    return [(a["action"], a["status"], a["signal"]) for a in rec.attempt_log]


def _ids(rec) -> tuple:
    return rec.run_dir, rec.run_id, rec.stages["binary"].wandb["id"]


def _ids_of_attempt(root: Path, pid: int) -> tuple:
    """Run dir, run id and W&B id of the run whose first attempt is process ``pid``."""
    (rec,) = [r for r in map(read_record, root.rglob("record.json")) if r.attempt_log[0]["pid"] == pid]
    return _ids(rec)


def test_preempted_requeued_and_cancelled_jobs_resume_from_their_checkpoints(tmp_path):
    """One job array of 3 jobs, each stopped after its first epoch, then: job 0 gets submitit's pre-timeout signal
    (USR2, as ``--signal=USR2@N`` sends it: submitit checkpoints and requeues it), job 1 is requeued with
    ``scontrol requeue`` (SIGTERM), job 2 is cancelled with ``scancel`` (SIGTERM). The sweep command waits for the
    requeued jobs' results (2 finished) and reports the cancelled one (1 interrupted); the same command again skips
    the 2 finished jobs and resumes the third. Every record equals an uninterrupted run's. ``hydra.job.chdir=true``
    and a relative output_root: every attempt finds the same job index."""
    tag = f"requeue-{os.getpid()}-{time.monotonic_ns()}"
    sweep = ["-m", "seed=0,1,2", "study=preempt", *INTERRUPTIBLE, "logger=wandb", "logger.mode=offline",
             "launcher=submitit_slurm", *FITS, "hydra.job.chdir=true", "output_root=out"]
    first = _sweep_process(sweep, tmp_path, {**STOP_AFTER_EPOCH_1, "ONEBIT_TEST_TAG": tag})
    done, ids, deadline = {}, {}, time.monotonic() + 240
    try:
        while len(done) < 3:
            if first.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jobs stopped: {done}; the sweep: {first.poll()} {first.communicate(timeout=10)}")
            for i, task in _stopped_tasks(tag).items():
                if i in done:
                    continue
                assert task["restarts"] == 0, f"the kill point fired again in a resumed attempt: {task}"
                ids[i] = _ids_of_attempt(tmp_path / "out", task["pid"])
                if i == 0:   # what SLURM sends signal_delay_s before the time limit; then the stopped task goes on
                    assert sh("scancel", "--signal=USR2", task["job"]).returncode == 0
                    assert sh("scancel", "--signal=CONT", task["job"]).returncode == 0
                elif i == 1:
                    assert sh("scontrol", "requeue", task["job"]).returncode == 0
                else:
                    assert sh("scancel", task["job"]).returncode == 0
                done[i] = task["job"]
            time.sleep(0.2)
        out, err = first.communicate(timeout=deadline - time.monotonic())
    finally:  # on failure: no stopped job may keep the node's CPUs
        if first.poll() is None:
            first.kill()
        for array in {p.name.split("_")[0] for p in (tmp_path / "out").glob("sweeps/*/*/.submitit/*_*")
                      if re.fullmatch(r"\d+_\d+", p.name)}:
            sh("scancel", array)
    assert first.returncode == 1, out[-2000:] + err[-3000:]
    assert "onebit sweep: 2 finished, 0 failed, 1 interrupted" in out, out[-2000:] + err[-3000:]
    assert f"SLURM job {done[2]} ended without a result (state CANCELLED)" in out + err
    assert [_restarts(done[i]) for i in range(3)] == [("COMPLETED", 1), ("COMPLETED", 1), ("CANCELLED", 0)]
    recs = {r.options["seed"]: r for r in map(read_record, sorted((tmp_path / "out").rglob("record.json")))}
    assert _attempts(recs[0]) == [("started", "interrupted", "SIGUSR2"), ("resumed", "finished", None)]
    assert _attempts(recs[1]) == [("started", "interrupted", "SIGTERM"), ("resumed", "finished", None)]
    assert _attempts(recs[2]) == [("started", "interrupted", "SIGTERM")]
    cancelled = recs[2]

    again = run_train(sweep, cwd=tmp_path, timeout=240)  # the same command
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "onebit sweep: 3 finished (2 skipped: finished before), 0 failed" in again.stdout
    recs = {r.options["seed"]: r for r in map(read_record, sorted((tmp_path / "out").rglob("record.json")))}
    assert [_ids(recs[i]) for i in range(3)] == [ids[i] for i in range(3)]  # run dir, run id, W&B id: kept
    assert len(list((tmp_path / "out").rglob("record.json"))) == 3
    assert _attempts(recs[2]) == [("started", "interrupted", "SIGTERM"), ("resumed", "finished", None)]
    assert (recs[2].run_dir, recs[2].run_id) == (cancelled.run_dir, cancelled.run_id)
    assert all(Path(r.run_dir).is_relative_to(tmp_path / "out" / "sweeps" / "preempt") for r in recs.values())

    whole = run_train(["-m", "seed=0,1,2", "study=preempt", *INTERRUPTIBLE, f"output_root={tmp_path / 'whole'}"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = {r.options["seed"]: r for r in map(read_record, (tmp_path / "whole").rglob("record.json"))}
    for seed in (0, 1, 2):
        assert recs[seed].job_key == uninterrupted[seed].job_key
        assert essence(recs[seed]) == essence(uninterrupted[seed])


# ----------------------------------------------------------------------------------------------------------
# DDP across the tasks of one SLURM job
# ----------------------------------------------------------------------------------------------------------

DDP = ["trainer=ddp", "trainer.devices=2", *TINY_FULL, "pretrain=none", "trainer.deterministic=true",
       "study=slurm-ddp", "seed=0"]


def test_ddp_across_two_slurm_tasks_equals_local_ddp(tmp_path):
    """``trainer=ddp`` in a SLURM job of 2 tasks (``hydra.launcher.tasks_per_node=2``; each task runs the job, its
    rank from SLURM_PROCID; Lightning's devices = tasks per node): one record, written by rank 0 only, equal to
    the same DDP run launched locally (Lightning starts the second process)."""
    slurm, local = tmp_path / "slurm", tmp_path / "local"
    r = run_train(["-m", *DDP, "launcher=submitit_slurm", *FITS, "hydra.launcher.tasks_per_node=2",
                   "hydra.launcher.mem_gb=2", f"output_root={slurm}"], timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "onebit sweep: 1 finished, 0 failed" in r.stdout
    (path,) = slurm.rglob("record.json")
    on_slurm = read_record(path)
    assert [(a["action"], a["status"]) for a in on_slurm.attempt_log] == [("started", "finished")]
    assert on_slurm.config["trainer"]["strategy"] == "ddp" and on_slurm.config["trainer"]["devices"] == 2
    # both tasks of the job ran it (a submitit result per task); rank 0 said where it runs
    (job,) = [p for p in (slurm / "sweeps" / "slurm-ddp").glob("*/.submitit/*") if p.is_dir()]
    assert sorted(p.name for p in job.glob("*_result.pkl")) == [f"{job.name}_{t}_result.pkl" for t in (0, 1)]
    assert f"running under SLURM: job {job.name}, task 0 of 2 on " in Path(on_slurm.run_dir, "train.log").read_text()
    assert len(list(slurm.rglob("job.json"))) == 1 and len(list((slurm / "index").glob("*.holder.json"))) == 1

    r = run_train([*DDP, f"output_root={local}"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = local.rglob("record.json")
    on_local = read_record(path)
    assert on_slurm.job_key == on_local.job_key
    assert essence(on_slurm) == essence(on_local)
