"""Where a job runs, decided by onebit, not guessed by Lightning: a SLURM job step, or an ordinary machine.

Lightning detects SLURM by itself (``SLURMEnvironment.detect``) and, wherever an ``srun`` command exists but the
process was not started by it (every command on a SLURM login node), warns on stderr that "The `srun` command is
available on your system but is not used". onebit decides once (:func:`environment`) and hands Lightning the
cluster environment explicitly (``Trainer(plugins=[...])``), so that detection, and its warning, never run:

- **A SLURM job step** (``SLURM_JOB_ID`` and ``SLURM_NTASKS`` set, the job not named ``bash`` / ``interactive``,
  which is how SLURM's interactive shells are spelled): Lightning's ``SLURMEnvironment``; ranks, world size and the
  main address come from SLURM (``srun`` starts one process per task). Requeueing belongs to whoever submitted the job:
  under submitit (``SUBMITIT_EXECUTOR=slurm``: ``launcher=submitit_slurm``) submitit handles the pre-timeout signal and
  requeues the job itself, so Lightning's ``auto_requeue`` is off (two owners would requeue it twice); in a job a
  user submitted with ``sbatch``/``srun`` directly Lightning's auto-requeue stays on (``--signal=USR1@90``). onebit
  says which, once, in its own words (:func:`describe`).

  **Who owns a requeue under ``launcher=submitit_slurm``** (tested on a real cluster: tests/test_slurm.py):

  - *SLURM* requeues a preempted job or one requeued by hand (``scontrol requeue``) and cancels with ``scancel``; in
    every case it first sends SIGTERM to all of the job's processes. onebit's handler
    (``onebit.records.lifecycle.catching_signals``) records the run ``interrupted`` and the process exits 143
    without a result file, so the sweep, which waits for results, waits on; the requeued job starts the same
    batch script with the same pickled call, i.e. the same Hydra job with the same overrides, and onebit resumes it
    from its last checkpoint (same run directory, run id, W&B ids; the record gets a second attempt).
  - *submitit* owns the time limit: SLURM sends it ``USR2`` ``signal_delay_s`` before the limit
    (``#SBATCH --signal=USR2@120``); submitit's handler, installed before the job runs, calls
    hydra-submitit-launcher's ``checkpoint()`` (the same job again), ``scontrol requeue`` and exits. onebit records
    the run ``interrupted by SIGUSR2`` first and then calls submitit's handler (the signal is handed over,
    ``lifecycle.handed_over``), so both happen and in that order. ``hydra.launcher.max_num_timeout`` (5 in
    conf/launcher/submitit_slurm.yaml) bounds how many time-outs are requeued; preemptions are not counted.
  - *onebit* owns no requeue: it records, and resumes what it finds interrupted. *Lightning* owns none either
    under submitit (``auto_requeue`` off; its SIGUSR1 handler is not installed).
  - *A DDP job* (``trainer=ddp``, ``hydra.launcher.tasks_per_node=N`` = ``trainer.devices``): submitit starts
    the Hydra job in each of the N tasks; the rank is SLURM_PROCID (``onebit.core.dist``); only rank 0 takes the
    job's index lock and writes the record; submitit's USR2 handler checkpoints and requeues from rank 0 only.
- **Anything else** (a laptop, a login node where ``srun`` merely exists, ``salloc``'s shell): torchrun's,
  LSF's and MPI's environments are still detected by Lightning as before; otherwise Lightning's default
  ``LightningEnvironment`` is given explicitly.
"""

from __future__ import annotations

import os

INTERACTIVE_JOB_NAMES = ("bash", "interactive")  # Lightning's and SLURM's spelling of an interactive allocation


def in_slurm_step() -> bool:
    """Whether this process is a task of a SLURM job step (started by ``srun``, or by ``sbatch`` with tasks)."""
    return ("SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" in os.environ
            and os.environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES)


def under_submitit() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def environment():
    """The ClusterEnvironment onebit gives the Trainer, or ``None`` where Lightning's own detection is safe to run
    (torchrun, LSF, MPI: none of them checks for ``srun``)."""
    from lightning_fabric.plugins.environments import (LightningEnvironment, LSFEnvironment, MPIEnvironment,
                                                       SLURMEnvironment, TorchElasticEnvironment)

    if TorchElasticEnvironment.detect():
        return None
    if in_slurm_step():
        return SLURMEnvironment(auto_requeue=not under_submitit())
    if LSFEnvironment.detect() or MPIEnvironment.detect():
        return None
    return LightningEnvironment()


def plugins() -> list:
    """``Trainer(plugins=...)``: the cluster environment of :func:`environment`, when onebit decides it."""
    env = environment()
    return [] if env is None else [env]


def describe() -> str | None:
    """One line about the SLURM job this process belongs to, or ``None`` outside one."""
    if not in_slurm_step():
        return None
    e = os.environ
    array = f" (array {e['SLURM_ARRAY_JOB_ID']}_{e['SLURM_ARRAY_TASK_ID']})" if "SLURM_ARRAY_JOB_ID" in e else ""
    requeue = ("submitit requeues it on preemption or time-out" if under_submitit()
               else "Lightning requeues it on SIGUSR1 (sbatch --signal=USR1@90)")
    return (f"running under SLURM: job {e['SLURM_JOB_ID']}{array}, task {e.get('SLURM_PROCID', '0')} of "
            f"{e['SLURM_NTASKS']} on {e.get('SLURMD_NODENAME', 'this node')}; {requeue}")
