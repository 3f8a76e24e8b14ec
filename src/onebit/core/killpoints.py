"""Named points where a test can kill the real process (``ONEBIT_KILL_AT=<point>``), to prove that a job
killed there and run again ends with the record of an uninterrupted run (tests/test_resume.py).

Points: ``epoch_end:<stage>:<epoch>`` (after that epoch's checkpoint was requested), ``fit_end:<stage>`` (after the
last epoch, before the test), ``test:<stage>`` (during the test), ``cache_save`` (weights written, metadata not),
``stage_end:<stage>`` (stage recorded, next stage not started), ``job_end`` (all stages done, run not finished),
``seeds_look:<k>`` (a ``hydra.sweeper.seeds=auto`` sweep: look k-1 decided, look k's jobs not launched).

``ONEBIT_KILL_SIGNAL`` (``KILL`` by default; ``TERM``, ``INT``, ``HUP``...) picks the signal the process sends itself
there: SIGKILL leaves no chance to record anything, the others are an interruption (``onebit.records.lifecycle``).
``STOP`` halts the process there, so that a test can act on it from outside as a cluster would (tests/test_slurm.py:
``scontrol requeue``, ``scancel``, submitit's USR2; SLURM sends SIGCONT before its SIGTERM). A point fires in every
attempt that reaches it; an ``epoch_end`` point is not reached again by the attempt that resumes after that epoch.
"""

from __future__ import annotations

import os
import signal


def kill_point(name: str) -> None:
    if os.environ.get("ONEBIT_KILL_AT") == name:
        os.kill(os.getpid(), signal.Signals[f"SIG{os.environ.get('ONEBIT_KILL_SIGNAL', 'KILL')}"])
