"""``launcher=submitit_slurm``: hydra-submitit-launcher's SlurmLauncher, plus one check before it submits.

SLURM accepts a job that no node of its partition can ever run (with its default ``EnforcePartLimits=NO``): the job
waits with reason ``PartitionConfig`` forever, and so does submitit, waiting for its results. So before submitting,
:func:`check` runs ``sbatch --test-only`` on the very batch script that submitit would submit (same partition, CPUs,
memory, GPUs, time, nodes, additional parameters); when SLURM says no, the sweep stops before any job with one line
and exit status 2, naming what was asked and what the partition's nodes offer::

    onebit: error: SLURM cannot run these jobs (Requested node configuration is not available): asked
    (hydra.launcher.*) partition=debug, ..., cpus_per_task=64, mem_gb=1, ...; partition debug (up, 1 nodes) offers
    per node: 2 CPUs, 21694 MB memory, no GPUs or other gres, time limit infinite
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

ASKED = ("partition", "nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node", "timeout_min", "gres",
         "constraint", "account", "qos")
TIMEOUT_S = 60


def batch_script(params: dict, jobs: int, folder: Path) -> str:
    """The sbatch script submitit submits for ``jobs`` jobs with the launcher's ``params`` (as the launch of
    hydra-submitit-launcher builds its executor)."""
    import submitit

    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder)
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    slurm = executor._executor  # submitit's SlurmExecutor; map_count: the job array of this many jobs
    slurm.parameters["map_count"] = jobs
    return slurm._make_submission_file_text("true", "check")


def offered(partition: str | None) -> str:
    """What the partition's nodes offer (``sinfo``), in words; the partitions there are if it does not exist."""
    rows = [r.split("|") for r in _run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l|%D|%a"]).stdout.splitlines() if r]
    part = next((r for r in rows if r[0].rstrip("*") == partition or (partition is None and r[0].endswith("*"))),
                None)
    if part is None:
        names = sorted({r[0].rstrip("*") for r in rows})
        return f"partition {partition} does not exist; partitions: {', '.join(names) or 'none'}"
    name, cpus, mem, gres, limit, nodes, avail = part
    gres = "no GPUs or other gres" if gres in ("(null)", "") else f"gres {gres}"
    return (f"partition {name.rstrip('*')} ({avail}, {nodes} nodes) offers per node: {cpus} CPUs, {mem} MB memory, "
            f"{gres}, time limit {limit}")


def check(params: dict, jobs: int) -> None:
    """Stop with one line (exit 2) unless SLURM can run ``jobs`` jobs with the launcher's ``params``."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # SLURM's commands would retry for 60 s before they say so
        _stop(f"SLURM_CONF={conf}: no such file (SLURM's configuration; unset: /etc/slurm/slurm.conf)")
    try:
        with tempfile.TemporaryDirectory(prefix="onebit-sbatch-") as tmp:
            script = Path(tmp) / "check.sh"
            script.write_text(batch_script(params, jobs, Path(tmp)))
            r = _run(["sbatch", "--test-only", str(script)])
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:  # no sbatch/srun, or no answer
        _stop(f"launcher=submitit_slurm needs a reachable SLURM cluster (sbatch, srun): {e}; "
              "launcher=submitit_local runs the same jobs on this machine")
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        why = re.sub(r"^(?:(?:sbatch: )?(?:error|fatal): |allocation failure: |Batch job submission failed: )+", "",
                     lines[-1] if lines else f"sbatch exit status {r.returncode}")
        if "fatal:" in r.stderr:  # no configuration, no controller: nothing to ask sinfo either
            _stop(f"SLURM cannot run these jobs: sbatch: {why}")
        asked = ", ".join(f"{k}={params[k]}" for k in ASKED if params.get(k) is not None)
        _stop(f"SLURM cannot run these jobs ({why}): asked (hydra.launcher.*) {asked}; "
              f"{offered(params.get('partition'))}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _stop(line: str) -> None:
    print(f"onebit: error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)  # not an exception: Hydra would print its traceback


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher after :func:`check`."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        check(self.params, len(job_overrides))
        return super().launch(job_overrides, initial_job_idx)

