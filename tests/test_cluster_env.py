"""onebit decides where a job runs (``onebit.core.cluster``) and says so once, in its own words: inside a real SLURM
job step it names the job and task; on a machine where ``srun`` merely exists (a login node), a refused option is
still one line and a clean run prints no Lightning warning about ``srun``.

The real one-node cluster of tests/cluster/start_slurm.sh (``slurm_cluster``) makes ``srun`` exist here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_FULL, only_record, run_process
from conftest_slurm import slurm_cluster  # noqa: F401 (the fixture)
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

from onebit.core import cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
ARGS = [*TINY_FULL, "pretrain=none"]
SRUN_WARNING = "command is available on your system but is not used"


def test_on_a_login_node_a_refusal_is_one_line_and_a_run_is_quiet(tmp_path):
    assert shutil.which("srun"), "the test cluster installs srun"
    refused = run_process([sys.executable, str(ROOT / "src" / "train.py"), "sign=aprox", f"output_root={tmp_path}"])
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "onebit: error: unknown option sign='aprox'; valid choices: approx, ste, swish"], refused.stderr
    ran = run_process([sys.executable, str(ROOT / "src" / "train.py"), *ARGS, f"output_root={tmp_path}"])
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert SRUN_WARNING not in ran.stderr + ran.stdout and "running under SLURM" not in ran.stdout
    assert only_record(tmp_path).status == "finished"


def test_a_job_step_says_once_which_job_and_task_it_is(tmp_path):
    r = subprocess.run(["srun", "-p", "debug", "-n", "1", "-c", "1", "--mem=1G", "-J", "onebit-test",
                        sys.executable, str(ROOT / "src" / "train.py"), *ARGS, f"output_root={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "running under SLURM" in ln]
    assert len(lines) == 1 and "task 0 of 1" in lines[0], r.stdout[-2000:]
    assert "Lightning requeues it on SIGUSR1" in lines[0]   # submitted by hand: Lightning owns the requeue
    assert SRUN_WARNING not in r.stderr + r.stdout
    rec = only_record(tmp_path)
    assert rec.status == "finished"


def test_the_decision(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    assert isinstance(cluster.environment(), LightningEnvironment) and cluster.describe() is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert isinstance(cluster.environment(), LightningEnvironment)   # an allocation without a job step (salloc)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    env = cluster.environment()
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert cluster.environment().auto_requeue is False               # submitit owns the requeue
    assert "submitit requeues it" in cluster.describe()
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")               # SLURM's interactive shell: not a job step
    assert isinstance(cluster.environment(), LightningEnvironment)
