"""onebit on a real SLURM cluster (no mocks): the one-node cluster of tests/cluster/start_slurm.sh (the
``slurm_cluster`` fixture, tests/conftest_slurm.py) runs plain jobs, a onebit multirun through
``launcher=submitit_slurm`` that gives the same records and tables as the basic launcher, and refuses a request no
node can satisfy in one line instead of leaving it pending forever.

Tier: ``slurm`` and ``slow`` (a cluster start, ~1 min more where apt-get must install slurm-wlm and munge, and real
processes): not in ``pytest -m "not slow"``, in the full suite (``python -m pytest``, CI); ``pytest -m slurm`` runs
these alone."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from conftest import TINY_FULL, run_cli, run_train
from conftest_slurm import slurm_cluster  # noqa: F401 (the fixture)

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
