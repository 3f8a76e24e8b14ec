"""onebit's training entry point (``python src/train.py``, ``onebit-train``).

    python src/train.py                                        # Bi-Real-18 on digits: clip pretraining -> binary
    python src/train.py -m sign=approx,ste shortcut=true,false # a Hydra multirun: 4 jobs, one record each

Compose the config (conf/train.yaml), run the job (``onebit.training.jobs``: its recipe of stages), print a short
summary. A bad option or value stops the job before any training with one line naming it; in a multirun a failed job
is recorded and the sweep goes on, ending with a summary and a non-zero exit if any job failed.

:func:`main` takes the command line as a list and returns the exit status, so tests and scripts call it in-process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from onebit.cli import preflight as P
from onebit.cli.resolvers import register_resolvers
from onebit.core.dist import global_rank
from onebit.core.errors import ConfigError, error_line
from onebit.core.paths import CONF_DIR, absolute, launched_from
from onebit.records.layout import remove_if_empty, remove_stub
from onebit.records.lifecycle import (RESUME_HINT, RunInterrupted, catching_signals, describe, interruption,
                                      signal_name)

PATH_KEYS = ("output_root", "cache_dir")  # written by a job: made absolute (not in a job's identity)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _task(cfg: DictConfig):
    # after Hydra set up logging: Lightning then logs through its handlers
    from onebit.tracking import progress

    progress.quiet()
    hc = HydraConfig.get()
    # relative paths (output_root, cache_dir, data.root) are the launch directory's, also where hydra.job.chdir=true
    # moved the job into its own directory: the job index, resume and the pretrain cache stay where they were
    with launched_from(hc.runtime.cwd), catching_signals():  # also in a launcher's worker process
        for key in PATH_KEYS:
            if isinstance(cfg.get(key), str):
                cfg[key] = absolute(cfg[key])
        try:
            return _job(cfg, hc)
        finally:  # a single run's directory that holds no run (refused, skipped, resumed); a sweep's: SweepSummary
            if hc.mode != RunMode.MULTIRUN and global_rank() == 0 and remove_stub(hc.runtime.output_dir):
                remove_if_empty(Path(hc.runtime.output_dir).parent)


def _job(cfg: DictConfig, hc):
    """The job of :func:`_task`, its paths absolute: run it and print its summary."""
    from onebit.tracking import progress
    from onebit.training import jobs

    if cfg.get("print_config") and global_rank() == 0:
        text = progress.config_yaml(cfg, dict(hc.runtime.choices))
        print(text, flush=True)
        progress.info_to_file("composed config:\n%s", text)
    explicit = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
    try:
        outcome = jobs.run(cfg, Path(hc.runtime.output_dir), explicit)
    except RunInterrupted as e:   # a signal, not an error: the record says interrupted, the sweep stops here
        print(interrupted_line(e, jobs.is_multirun()), file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Exception as e:
        if (stop := interruption(e)) is not None:  # an error on the way out of an interrupted run: still interrupted
            print(interrupted_line(stop, jobs.is_multirun()), file=sys.stderr, flush=True)
            sys.exit(stop.exit_code)  # never a normal return: submitit would report a requeued job as done
        print(error_line(e), file=sys.stderr)
        if jobs.is_multirun():
            return None  # recorded as failed; the sweep goes on and SweepSummary reports it
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    if outcome is None:  # a DDP helper rank: rank zero reports
        return None
    record, action = outcome
    if action == "skipped":
        print("onebit: skipped: this job finished before (set resume=false to run it again)")
    print("\n".join(jobs.summary_lines(record)))
    # a sweeper's objective (hydra/sweeper=optuna, conf/hparams_search/): the final stage's best val top-1, never a
    # test metric; None for a failed job (Optuna marks the trial failed and goes on)
    return record.final_stage.metrics.get("val/top1_best")


def interrupted_line(e: RunInterrupted, sweep: bool = False) -> str:
    """What the console says when a signal stops a job (``onebit.records.lifecycle``)."""
    why = f"{signal_name(e.signum)} ({describe(e.signum)})"
    record = getattr(e, "record", None)
    if record is None:
        return f"onebit: interrupted by {why} before the run started; nothing was recorded"
    again = ("run the same command again: finished jobs are skipped and this one resumes from its last checkpoint"
             if sweep else f"{RESUME_HINT} from its last checkpoint")
    return (f"onebit: interrupted by {why} after {record.training_seconds or 0.0:.1f}s; recorded as interrupted, "
            f"not failed: {again} ({record.run_dir})")


def main(argv: list[str] | None = None) -> int:
    """Run ``train.py argv`` (default: the process's command line) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # a onebit process owns its W&B service: one inherited from a parent process (WANDB_SERVICE) would outlive a
    # killed job and keep its W&B run ids "in use", so that the resumed job could not log to them
    os.environ.pop("WANDB_SERVICE", None)
    register_resolvers()
    try:  # bad input: one line before Hydra; valid Trainer arguments the config lacks become ++trainer.X=v
        argv = P.preflight(argv)
    except ConfigError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    saved, sys.argv = sys.argv, [sys.argv[0] if sys.argv and sys.argv[0] else "train.py", *argv]
    try:
        with catching_signals():
            _task()
    except RunInterrupted as e:  # between jobs, or while Hydra composes: nothing of a run to record
        print(interrupted_line(e), file=sys.stderr, flush=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
