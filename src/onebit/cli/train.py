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
from omegaconf import DictConfig

from onebit.cli import preflight as P
from onebit.cli.resolvers import register_resolvers
from onebit.core.dist import global_rank
from onebit.core.errors import ConfigError, error_line
from onebit.core.paths import CONF_DIR, absolute, launched_from

PATH_KEYS = ("output_root", "cache_dir")  # written by a job: made absolute (not in a job's identity)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _task(cfg: DictConfig):
    # after Hydra set up logging: Lightning then logs through its handlers
    from onebit.tracking import progress

    progress.quiet()
    hc = HydraConfig.get()
    # relative paths (output_root, cache_dir, data.root) are the launch directory's, also where hydra.job.chdir=true
    # moved the job into its own directory: the job index, resume and the pretrain cache stay where they were
    with launched_from(hc.runtime.cwd):
        for key in PATH_KEYS:
            if isinstance(cfg.get(key), str):
                cfg[key] = absolute(cfg[key])
        return _job(cfg, hc)


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
    except Exception as e:
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
        _task()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
