"""A run's life, one state machine: which status follows which, and what every way of stopping a run records.

::

    (no record) --start--> running --returns----------------------> finished
                           running --an exception------------------> failed       --same command--> running
                           running --SIGINT / SIGTERM / SIGHUP -----> interrupted  --same command--> running
                           running --SIGKILL, power loss, OOM killer> (stays running; no live lock holder, so the
                                                                      next command resumes it)
    refused: a config stopped before any record existed (only ``job.json`` says so; no record, nothing in tables)

- A signal (:data:`SIGNALS`: Ctrl-C, ``kill``, SLURM's preemption and time limit, a closed terminal) is not an error:
  the run is ``interrupted``, the console says so and how to resume, the exit status is 128 + the signal's number
  (the shell's convention), and running the same command again resumes it from its last checkpoint.
- Only an exception raised by the work itself is ``failed`` (with its real cause in one line).
- :func:`check_transition` refuses any other change, so a finished record can never turn into anything else.

Lightning handles Ctrl-C itself (``KeyboardInterrupt`` becomes ``sys.exit(1)``) and SIGTERM by raising
``SIGTERMException`` at the next batch; onebit's handler (:func:`catching_signals`) replaces the first and joins the
second (Lightning composes existing SIGTERM handlers with its own), raising :class:`RunInterrupted` at once, so the
record knows which signal stopped the run however Lightning would have reported it.

**A signal another component owns** (:func:`handed_over`): in a submitit job (``launcher=submitit_slurm``) submitit
installs, before it calls the job, a handler for its pre-timeout / preemption signal (``SIGUSR2``, or
``$SUBMITIT_PREEMPT_SIGNAL``; SLURM sends it ``signal_delay_s`` before the time limit, ``#SBATCH --signal``) that
checkpoints the job (hydra-submitit-launcher's ``checkpoint()``: the same job again), runs ``scontrol requeue`` and
exits. Left alone, that handler would exit in the middle of training and the record would say ``failed``. So within
:func:`catching_signals` that signal interrupts the run like SIGTERM (the record says ``interrupted by SIGUSR2``),
and when the block ends the previous handler (submitit's) gets the signal: submitit still owns the requeue, onebit
only records first. SIGTERM, which SLURM sends when it requeues, preempts, cancels or times out a job, stays onebit's
(submitit merely logs it). The requeued job runs the same command and resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

RUN_STATUSES = ("running", "finished", "failed", "interrupted")
STAGE_STATUSES = ("pending", "running", "finished", "failed", "interrupted")
# status -> the statuses it may become (None: no record yet)
TRANSITIONS = {None: {"running"}, "running": {"running", "finished", "failed", "interrupted"},
               "failed": {"running"}, "interrupted": {"running"}, "finished": set()}
# the signals that interrupt a run (SIGKILL cannot be caught: the run stays `running` and resumes the same way)
SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "kill, or SLURM's preemption or time limit",
           signal.SIGHUP: "the terminal closed"}
RESUME_HINT = "run the same command again to resume it"
SUBMITIT_PREEMPTION = "SLURM's pre-timeout or preemption signal: submitit requeues the job"


def handed_over() -> dict[int, str]:
    """Signals that onebit records as an interruption and then hands to the handler installed before it (whose
    owner acts on them), with their meaning: submitit's preemption signal, in a submitit job."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return {}
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")  # as submitit reads it
    sig = getattr(signal, f"SIG{name}", None)
    return {} if sig is None or sig in SIGNALS else {sig: SUBMITIT_PREEMPTION}


def describe(signum: int) -> str:
    """What a signal means to a run, in words."""
    return SIGNALS.get(signum) or handed_over().get(signum) or "a signal"


class RunInterrupted(BaseException):
    """A signal of :data:`SIGNALS` reached the process. A BaseException (like KeyboardInterrupt), so that no
    ``except Exception`` on the way up records it as a failure."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class TransitionError(RuntimeError):
    """A status change the lifecycle does not allow (a bug in onebit, not bad input)."""


def check_transition(old: str | None, new: str) -> None:
    if new not in TRANSITIONS.get(old, set()):
        raise TransitionError(f"a run cannot go from {old!r} to {new!r} (allowed: "
                              f"{', '.join(sorted(TRANSITIONS.get(old, set()))) or 'nothing'})")


def interruption(e: BaseException) -> RunInterrupted | None:
    """The interruption behind ``e``, which decides how a run stopped by ``e`` ends: ``interrupted`` (by its
    ``signum``) when there is one, else ``failed``. It is ``e`` itself, one ``e`` was raised while handling, or the
    one a signal raised within :func:`catching_signals` (``e`` an error on the way out of an interrupted run, raised
    in a ``finally``: e.g. W&B's service, which SLURM signals too, gone; or Lightning's own ``SIGTERMException`` /
    ``exit(1)`` after the signal); else None: an error of the work."""
    seen = e
    while seen is not None:
        if isinstance(seen, RunInterrupted):
            return seen
        seen = seen.__context__
    return _raised[-1] if _raised else None


_received: list[int] = []
_raised: list[RunInterrupted] = []  # what _handler raised (the run's code sets its .record)


def received() -> int | None:
    """The last signal of :data:`SIGNALS` this process received while :func:`catching_signals` was active."""
    return _received[-1] if _received else None


def _handler(signum, frame) -> None:
    _received.append(signum)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the record's last write
    _raised.append(RunInterrupted(signum))
    raise _raised[-1]


@contextmanager
def catching_signals():
    """Within the block, every signal of :data:`SIGNALS` raises :class:`RunInterrupted` in the main thread; the
    previous handlers come back after it. A signal of :func:`handed_over` whose owner installed a handler does the
    same, and that handler gets it when the block ends (after the record). Outside the main thread (where Python
    cannot set handlers) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a handed-over signal is caught only where its owner installed a handler (a callable: submitit's)
    owned = [s for s in handed_over() if callable(signal.getsignal(s)) and signal.getsignal(s) is not _handler]
    previous = {s: signal.getsignal(s) for s in (*SIGNALS, *owned)}
    _received.clear()
    _raised.clear()
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        got = received()
        if got in owned:  # recorded by now: its owner acts on it (submitit: checkpoint, requeue, exit)
            _received.clear()
            previous[got](got, None)
