"""``launcher=submitit_slurm``: hydra-submitit-launcher's SlurmLauncher, plus one check before it submits.

SLURM accepts a job that no node of its partition can ever run (with its default ``EnforcePartLimits=NO``): the job
waits with reason ``PartitionConfig`` forever, and so does submitit, waiting for its results. So before submitting,
:func:`check` runs ``sbatch --test-only`` on the very batch script that submitit would submit (same partition, CPUs,
memory, GPUs, time, nodes, additional parameters); when SLURM says no, the sweep stops before any job with one line
and exit status 2, naming what was asked and what the partition's nodes offer::

    onebit: error: SLURM cannot run these jobs (Requested node configuration is not available): asked
    (hydra.launcher.*) partition=debug, ..., cpus_per_task=64, mem_gb=1, ...; partition debug (up, 1 nodes) offers
    per node: 2 CPUs, 21694 MB memory, no GPUs or other gres, time limit infinite

While the jobs run, the sweep waits for their results (submitit's ``Job.results()``) with two changes
(:func:`waiting`), both for jobs that end without a result file (cancelled with ``scancel``, killed, a node lost):

- **Clusters without accounting.** submitit learns a job's state only from ``sacct``; where SLURM keeps no
  accounting (``AccountingStorageType=accounting_storage/none``: sacct says "Slurm accounting storage is disabled")
  a job that died without its result file would be waited for forever. :class:`StateWatcher` asks ``sacct`` first
  and, when it fails, ``scontrol show job`` (the controller's own view, kept ``MinJobAge`` seconds after a job
  ends; a job it no longer knows is ``GONE``, i.e. over). ``JobCompType=jobcomp/filetxt`` would not help: submitit
  never reads it (``sacct --completion``).
- **A job without a result** is not an error of the sweep: its record (interrupted, or none) says what happened, and
  onebit's sweep summary reports it (``1 interrupted``; exit 1) instead of a submitit traceback; the same command
  skips what finished and resumes it. Its Hydra return value is ``None`` (as for a failed job).

Requeueing (a job preempted, at its time limit, or ``scontrol requeue``) is SLURM's and submitit's: SLURM sends
SIGTERM, onebit records the run ``interrupted``, the job goes back to the queue with its same batch script and
pickled call, and its next start resumes the run; submitit's pre-timeout signal (``--signal=USR2@signal_delay_s``)
is recorded first and then handled by submitit (``onebit.records.lifecycle``). The sweep keeps waiting through a
requeue (``PENDING`` / ``REQUEUED`` are not done) and gets the requeued job's result.
"""

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

ASKED = ("partition", "nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node", "timeout_min", "gres",
         "constraint", "account", "qos")
TIMEOUT_S = 60
SCONTROL_EVERY_S = 10  # without accounting, the controller is asked at most this often (submitit's sacct: 600 s)


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


# scontrol's states that are not over yet but that submitit's list of unfinished states (taken from sacct) lacks
NOT_OVER = {"CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING", "REQUEUE_HOLD",
            "REQUEUE_FED", "RESV_DEL_HOLD"}
log = logging.getLogger(__name__)


def scontrol_states(array_id: str) -> dict[str, str] | None:
    """``{"<job>_<task>" or "<job>": state}`` of a job (array) from ``scontrol show job``; ``{}`` when the controller
    no longer knows it; ``None`` when scontrol gave no answer."""
    try:
        r = _run(["scontrol", "show", "job", "-o", array_id])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    states = {}
    for line in r.stdout.splitlines():
        f = {}
        for kv in line.split():  # the first of each key: a later value (a comment, a path) may hold "k=v" too
            if "=" in kv:
                f.setdefault(*kv.split("=", 1))
        if "JobState" not in f:
            continue
        state = "RUNNING" if f["JobState"] in NOT_OVER else f["JobState"]
        if f.get("ArrayJobId") and f.get("ArrayTaskId"):
            for part in f["ArrayTaskId"].split("%")[0].split(","):  # 3 / 3-5 / 3,5 / 3-9%2
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{f['ArrayJobId']}_{i}"] = state
        else:
            states[f["JobId"]] = state
    return states


def _state_watcher():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class StateWatcher(SlurmInfoWatcher):
        """submitit's sacct watcher (asked at 2, 4, 8... s after the last submission, then at most every 60 s), with
        ``scontrol show job`` where sacct fails (no accounting; then at most every :data:`SCONTROL_EVERY_S`)."""

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            try:
                self._output = subprocess.check_output(command, stderr=subprocess.PIPE, timeout=TIMEOUT_S)
            except (OSError, subprocess.SubprocessError):  # no sacct, or no accounting: ask the controller
                self._num_calls += 1
                self._delay_s = SCONTROL_EVERY_S
                for array_id in {j.split("_")[0] for j in self._registered - self._finished}:
                    states = scontrol_states(array_id)
                    if states is None:
                        continue  # no answer this time: ask again at the next update
                    mine = [j for j in self._registered if j == array_id or j.startswith(array_id + "_")]
                    self._info_dict.update({j: {"State": states.get(j, "GONE")} for j in mine})
            else:
                self._num_calls += 1
                self._info_dict.update(self.read_info(self._output))
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return StateWatcher


@contextmanager
def waiting():
    """While the sweep waits for its SLURM jobs: :class:`StateWatcher` and results that tolerate a job without a
    result file (see the module's docstring). submitit's job class (``submitit.slurm.slurm.SlurmJob``) is swapped
    for a subclass for the duration, in this process."""
    from submitit.core.utils import FailedJobError, UncompletedJobError
    from submitit.slurm import slurm

    class Job(slurm.SlurmJob):
        watcher = _state_watcher()(delay_s=60)

        def results(self):
            try:
                return super().results()
            except (UncompletedJobError, FailedJobError) as e:  # no result, or submitit's own error in the job
                why = re.search(r"\(state: ([^)]*)\)", str(e))
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                log.warning("SLURM job %s ended without a result (%s); its record says what happened (log: %s)",
                            self.job_id, f"state {why.group(1)}" if why else (lines or ["no result"])[-1],
                            self.paths.stderr)
                return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

    # the executor makes a job array's jobs with the module's name SlurmJob, a single job with its job_class
    saved = slurm.SlurmJob, slurm.SlurmExecutor.job_class
    slurm.SlurmJob = slurm.SlurmExecutor.job_class = Job
    try:
        yield
    finally:
        slurm.SlurmJob, slurm.SlurmExecutor.job_class = saved


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher after :func:`check`, waiting for its jobs as :func:`waiting` says."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        check(self.params, len(job_overrides))
        with waiting():
            return super().launch(job_overrides, initial_job_idx)

