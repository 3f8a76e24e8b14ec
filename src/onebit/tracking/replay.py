"""A resumed stage's logger gets the epochs no attempt logged, from the stage's own history
(:class:`ReplayMissingEpochs`), so that the logger's curves hold every epoch, as the record does.

**Why epochs go missing.** Lightning hands an epoch's ``train/*`` (and the diagnostics' ``diag/*``) to the logger
last, after the epoch's checkpoint is written (``FitLoop.on_advance_end``: the callbacks' and the module's
``on_train_epoch_end``, ``last.ckpt`` among them, then the logger connector). An attempt stopped in between (SIGTERM
or SIGINT at that moment, a kill point, SIGKILL) leaves a checkpoint whose history holds the epoch while the logger
never got its ``train/*``; a SIGKILL also loses what a logger had not yet written (W&B: up to
:data:`~onebit.tracking.wandb_run.FLUSH_SECONDS`; Lightning's CSVLogger: its unsaved rows). The resumed attempt starts
after that checkpoint and would never log them again.

**What is filled in.** As the resumed stage starts training (or, resumed after its last epoch, whose fit trains
nothing and skips ``on_train_start``, as its fit ends), the restored per-epoch history (``Classifier.history``, saved
in every checkpoint: the record's ``history``) is compared with what the earlier attempts logged
(:func:`earlier_logged`), and for each epoch the keys they lack are logged through the stage's logger with the
epoch's ``epoch`` and ``trainer/global_step`` (:func:`missing_rows`). Where the earlier attempts' rows are read:

- W&B: the ``.wandb`` files of the same W&B run beside it (:func:`onebit.tracking.wandb_resume.logged_epochs`); the
  rows join the one W&B run, whose steps continue after the earlier attempts' (W&B plots them against ``epoch``);
- CSV and TensorBoard: the earlier attempts' versions ``<stage>`` and ``<stage>-attempt<k>`` beside the stage's own
  (:func:`earlier_versions`; ``metrics.csv``, the event files): the rows go to this attempt's version, so that the
  versions together hold every epoch once;
- any other logger: its files cannot be read back, so nothing is logged (the record's history is complete).

Not in the history, so never filled in: ``lr-*`` (logged at an epoch's start, so present unless SIGKILL took it) and
``seconds`` (not a logged metric). A first attempt has no history yet: nothing."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from onebit.tracking.wandb_resume import earlier_attempts, logged_epochs

NOT_LOGGED = ("epoch", "seconds")  # history keys that are not logged metrics (``epoch`` is every row's x-axis)
STEP = "trainer/global_step"       # the step an epoch's rows were logged at, as W&B names it
ATTEMPT = re.compile(r"^(?P<stage>.+)-attempt(?P<n>\d+)$")  # a file logger's version (onebit.tracking.loggers)


def missing_rows(history: list[dict], logged: dict[int, dict], batches_done: int) -> list[tuple[int, dict]]:
    """``[(step, row)]``: for each epoch of ``history`` (the restored per-epoch entries, oldest first) the keys that
    ``logged`` (``{epoch: {key: value}}``, :func:`earlier_logged`) lacks, with its ``epoch``. The step is the one
    Lightning logged the epoch's end metrics at, ``S_e - 1`` where ``S_e`` counts the optimizer steps after epoch
    ``e`` (``FitLoop.on_advance_end`` lowers ``_batches_that_stepped`` by one around that call): the earlier
    attempts' own value for that epoch (``logged[e]["trainer/global_step"]``) where they logged any row of it, else
    ``(e + 1) * batches_done / (E + 1) - 1`` with ``batches_done`` the restored step count after the history's last
    epoch ``E`` (every epoch of a stage steps equally often)."""
    if not history:
        return []
    last = int(history[-1]["epoch"])
    rows = []
    for entry in history:
        epoch = int(entry["epoch"])
        have = logged.get(epoch, {})
        row = {k: v for k, v in entry.items() if k not in NOT_LOGGED and k not in have}
        if not row:
            continue
        step = have.get(STEP)
        if not isinstance(step, (int, float)):
            step = round((epoch + 1) * batches_done / (last + 1)) - 1
        rows.append((int(step), {**row, "epoch": epoch}))
    return rows


def earlier_versions(logger) -> list[Path]:
    """The folders of the earlier attempts of a file logger's stage, oldest first: ``<stage>`` and
    ``<stage>-attempt<k>`` (k < n) beside its own ``<stage>-attempt<n>`` (onebit.tracking.loggers names them);
    none for a first attempt."""
    m = ATTEMPT.match(str(logger.version))
    if m is None:
        return []
    root = Path(logger.log_dir).parent
    names = [m["stage"], *(f"{m['stage']}-attempt{k}" for k in range(2, int(m["n"])))]
    return [root / name for name in names if (root / name).is_dir()]


def csv_logged(folders) -> dict[int, dict]:
    """``{epoch: {key: value}}`` of the rows with an ``epoch`` in the folders' ``metrics.csv`` (Lightning's
    CSVLogger: a column per key, ``step`` the logged step, an empty cell where a row has no value)."""
    found: dict[int, dict] = {}
    for folder in folders:
        path = Path(folder) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                values = {k: v for k, v in row.items() if k not in ("epoch", "step") and v not in ("", None)}
                if row.get("step"):
                    values[STEP] = int(float(row["step"]))
                found.setdefault(int(float(row["epoch"])), {}).update(values)
    return found


def tensorboard_logged(folders) -> dict[int, dict]:
    """``{epoch: {tag: value}}`` of the scalars in the folders' TensorBoard event files whose step has an ``epoch``
    scalar (Lightning logs ``epoch`` with every epoch-end row, at the same step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the tensorboard extra

    found: dict[int, dict] = {}
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        if "epoch" not in tags:
            continue
        epoch_at = {ev.step: int(ev.value) for ev in acc.Scalars("epoch")}
        for tag in tags:
            for ev in acc.Scalars(tag):
                if ev.step in epoch_at:
                    found.setdefault(epoch_at[ev.step], {}).update({tag: ev.value, STEP: ev.step})
    return found


def earlier_logged(logger) -> dict[int, dict] | None:
    """What the earlier attempts of the stage logged to ``logger``'s run or versions, ``{epoch: {key: value}}``;
    ``None`` for a logger whose files onebit cannot read back (nothing is then filled in)."""
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        return None if run.settings.mode == "disabled" else logged_epochs(earlier_attempts(run))
    if isinstance(logger, CSVLogger):
        return csv_logged(earlier_versions(logger))
    if isinstance(logger, TensorBoardLogger):
        return tensorboard_logged(earlier_versions(logger))
    return None


class ReplayMissingEpochs(Callback):
    """On a resumed stage (rank zero, with a logger): log the history rows its earlier attempts lack
    (:func:`missing_rows`, :func:`earlier_logged`) through the stage's logger. It runs as training starts
    (``on_train_start``: the checkpoint and the loop's step count are restored, nothing new is logged yet); for a
    stage resumed after its last epoch, whose fit trains nothing (Lightning skips ``on_train_start``), as its fit
    ends. ``replayed``: what it logged."""

    def __init__(self):
        self.replayed: list[tuple[int, dict]] | None = None  # None: not run yet

    def on_train_start(self, trainer, pl_module) -> None:
        self._replay(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.replayed is None:  # the fit trained nothing: resumed after its last epoch
            self._replay(trainer, pl_module)

    def _replay(self, trainer, pl_module) -> None:
        self.replayed = []
        logger, history = trainer.logger, getattr(pl_module, "history", None)
        if not (trainer.is_global_zero and logger is not None and history):
            return
        logged = earlier_logged(logger)
        if logged is None:
            return
        done = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        self.replayed = missing_rows(history, logged, done)
        for step, row in self.replayed:
            logger.log_metrics(row, step=step)
        if self.replayed:
            logger.save()
