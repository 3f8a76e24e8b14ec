"""What a run shows while it runs, and where it is kept.

- **Interactive** (stderr is a terminal): a Lightning TQDM bar per stage (:class:`StageBar`), on stderr, described
  by the stage's name and epoch (``binary 3/8``), showing the running training loss and the last val top-1.
- **Every run**: one INFO line per epoch through ``logging.getLogger("onebit")`` (:class:`EpochLog`), plus lines
  when a stage starts, ends, resumes, is skipped or comes from the pretrain cache (:func:`stage_started` ...;
  :func:`stage_result` is also the run's summary, ``onebit.training.jobs.summary_lines``), so
  the run's log file (``<run dir>/train.log``: Hydra's job log of its first attempt, to which every resumed
  attempt's lines are appended by :func:`logging_into`) holds the run's story. Where a bar is shown, the per-epoch
  lines go to the log file only (:func:`info_to_file`): the bar already shows them on the terminal.
- ``trainer.enable_progress_bar``: ``null`` (default) = auto (:func:`want_bar`), ``true`` / ``false`` force it.
- :func:`quiet` silences what a user cannot act on (Lightning's tips and start-up banner, one torch deprecation
  inside Lightning), by its logger or by message and category; :func:`config_yaml` is ``print_config=true``.

Only global rank zero shows bars and writes lines: Lightning disables the bar in other DDP ranks,
:class:`EpochLog` checks the rank, and ``onebit.training.loop`` calls the stage lines in rank zero only.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf

from onebit.core.dist import global_rank

log = logging.getLogger("onebit")
FILE_ONLY = "onebit_file_only"  # a LogRecord attribute: keep this record out of console handlers


# ----------------------------------------------------------------------------------------------------------
# Where lines go
# ----------------------------------------------------------------------------------------------------------


class _NotOnConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


def info_to_file(msg: str, *args) -> None:
    """Log ``msg`` at INFO to the log files but not to the console (stream handlers other than files: Hydra's
    ``console`` handler), e.g. per-epoch lines that a progress bar already shows."""
    for h in logging.getLogger().handlers:
        if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and not any(isinstance(f, _NotOnConsole) for f in h.filters)):
            h.addFilter(_NotOnConsole())
    log.info(msg, *args, extra={FILE_ONLY: True})


@contextmanager
def logging_into(path: Path, header: str):
    """While the block runs, every log line also goes to ``path`` (appended, after a ``header`` line): a resumed
    attempt runs in a new Hydra directory, and this keeps the run's story in the run's own log. A no-op when
    ``path`` is already a log file of the root logger (the first attempt: its Hydra directory is the run's)."""
    root = logging.getLogger()
    path = Path(path).resolve()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == path for h in root.handlers):
        yield
        return
    fmt = next((h.formatter for h in root.handlers if isinstance(h, logging.FileHandler) and h.formatter), None)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(fmt or logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        log.info(header, extra={FILE_ONLY: True})
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def want_bar(setting) -> bool:
    """``trainer.enable_progress_bar``: ``true`` / ``false`` as given; ``null`` (auto) shows a bar when stderr is
    a terminal, in rank zero, unless a parallel launcher (joblib, submitit) runs jobs side by side: there each job
    logs its lines instead of several bars fighting over one terminal."""
    if setting is not None:
        return bool(setting)
    return global_rank() == 0 and _isatty(sys.stderr) and not _parallel_launcher()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _parallel_launcher() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return False
    return hc.mode == RunMode.MULTIRUN and not str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher")


# ----------------------------------------------------------------------------------------------------------
# Lightning callbacks
# ----------------------------------------------------------------------------------------------------------


def callbacks(stage: str, show_bar: bool) -> list[Callback]:
    """The callbacks of one stage's Trainer: the per-epoch log lines, and the bar when ``show_bar``."""
    return [EpochLog(stage, show_bar), *([StageBar(stage)] if show_bar else [])]


def _metric(trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


class StageBar(TQDMProgressBar):
    """Lightning's TQDM bar on stderr, one per stage: ``binary 3/8: 45%|...| 20/44 [..., loss=0.53, val_top1=0.87]``.
    ``loss`` is the running mean training loss of the epoch (the sums ``onebit.training.module.Classifier`` keeps on the
    device, read at most twice a second), then the epoch's ``train/loss``; ``val_top1`` is the last validation's
    ``val/top1``. The last epoch's bar stays on the terminal; validation and test bars are cleared when they end."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage
        self._loss, self._read_at = None, 0.0

    def _tqdm(self, desc: str, position: int, leave: bool, **kwargs) -> Tqdm:
        return Tqdm(desc=desc, position=2 * self.process_position + position, disable=self.is_disabled, leave=leave,
                    dynamic_ncols=True, file=sys.stderr, bar_format=self.BAR_FORMAT, **kwargs)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._tqdm(f"{self.stage} sanity check", 0, False)

    def init_train_tqdm(self) -> Tqdm:
        return self._tqdm(self.stage, 0, True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        return self._tqdm(f"{self.stage} val", int(self.trainer.state.fn != "validate"), False)

    def init_test_tqdm(self) -> Tqdm:
        return self._tqdm(f"{self.stage} test", 0, False)

    def on_train_epoch_start(self, trainer, *_) -> None:
        """Lightning's, described ``<stage> <epoch>/<epochs>`` (calling it would draw an ``Epoch 0`` bar first)."""
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(f"{self.stage} {trainer.current_epoch + 1}/{trainer.max_epochs}")
        self._read_at = 0.0  # an epoch's first reading is its own

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # Lightning's, without renaming it "Validation DataLoader 0"
            self.val_progress_bar.reset(total=convert_inf(self.total_val_batches_current_dataloader))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # Lightning's, without renaming it "Testing DataLoader 0"
            self.test_progress_bar.reset(total=convert_inf(self.total_test_batches_current_dataloader))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.train_progress_bar.disable:  # the bar that stays shows the last epoch's train/loss
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict:
        batches = pl_module._batches  # 0 once the module has logged the epoch's train/loss
        if batches and time.monotonic() - self._read_at > 0.5:
            self._loss, self._read_at = float(pl_module._loss_sum) / batches, time.monotonic()
        loss = self._loss if batches else _metric(trainer, "train/loss")
        val = _metric(trainer, "val/top1")
        return {**({"loss": f"{loss:.4f}"} if loss is not None else {}),
                **({"val_top1": f"{val:.4f}"} if val is not None else {})}


class EpochLog(Callback):
    """One INFO line per finished epoch of this fit (:func:`epoch_line`), from the module's ``history`` entry (the
    values and ``seconds`` the record keeps). Global rank zero only.

    The module completes an epoch's entry in its own hooks, which Lightning calls after the callbacks': its
    training metrics in ``on_train_epoch_end``, its ``seconds`` when the next epoch starts or training ends. So
    the line is written at the next epoch's first batch, or when the fit ends."""

    def __init__(self, stage: str, to_file_only: bool = False):
        self.stage, self.to_file_only = stage, to_file_only
        self._next: int | None = None  # the epoch whose line comes next; None until this fit starts one

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._next is None:
            self._next = trainer.current_epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self._flush(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module) -> None:
        entry = pl_module.history[-1] if pl_module.history else {}
        if entry.get("epoch") != self._next or "seconds" not in entry or not trainer.is_global_zero:
            return
        line = epoch_line(self.stage, self._next + 1, trainer.max_epochs, entry)
        (info_to_file if self.to_file_only else log.info)(line)
        self._next += 1


def epoch_line(stage: str, epoch: int, epochs: int, m: dict) -> str:
    """``binary epoch 3/8: train loss 0.5321 top-1 0.8123, val loss 0.4011 top-1 0.8852, 12.3s``."""
    def f(key):
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    return (f"{stage} epoch {epoch}/{epochs}: train loss {f('train/loss')} top-1 {f('train/top1')}, "
            f"val loss {f('val/loss')} top-1 {f('val/top1')}, {m['seconds']:.1f}s")


# ----------------------------------------------------------------------------------------------------------
# Stage lines (onebit.training.loop calls these in rank zero)
# ----------------------------------------------------------------------------------------------------------


def bits(st) -> str:
    """``A1/W1``: a StageRecord's activation / weight bits ("" for a record without them)."""
    eff = st.efficiency or {}
    return f"A{eff['activations']}/W{eff['weights']}" if "activations" in eff else ""


def stage_result(st) -> str:
    """``val top-1 0.8852 (best 0.8852), test top-1 0.9000, 23.4s``: a finished StageRecord, in its log line and
    the run's summary. A cache hit took ``wait_seconds`` (the lock, loading) and saved the twin's training time:
    ``..., 0.1s (cached twin: saved 16.9s)`` (records before ``saved_seconds`` kept that as their ``seconds``)."""
    m, cache, nan = st.metrics, st.cache or {}, float("nan")
    took = f"{st.seconds or 0:.1f}s"
    if cache.get("hit"):
        saved = cache["saved_seconds"] if "saved_seconds" in cache else st.seconds or 0
        took = f"{cache.get('wait_seconds') or 0:.1f}s (cached twin: saved {saved:.1f}s)"
    return (f"val top-1 {m.get('val/top1', nan):.4f} (best {m.get('val/top1_best', nan):.4f}), "
            f"test top-1 {m.get('test/top1', nan):.4f}, {took}")


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def stage_started(i: int, n: int, stage, st) -> None:
    """``stage 2/3 binary: binary model (A1/W1), 8 epochs, initialised from pretrain``."""
    init = f"initialised from {stage.init}" if stage.init else "fresh initialisation"
    if stage.cached:
        init += " (unless the pretrain cache has this twin)"
    extra = (", BatchNorm only" if stage.trainable == "batchnorm" else "") + (
        ", weights fixed to +-1" if stage.fixed_weights else "")
    log.info("stage %d/%d %s: %s model%s, %s, %s%s", i, n, stage.name, stage.model,
             f" ({bits(st)})" if bits(st) else "", _n(stage.epochs, "epoch"), init, extra)


def stage_resumed(name: str, done: int, epochs: int, path) -> None:
    """``resuming stage binary at epoch 3/8 from <path>`` (``done`` epochs finished), or ``resuming stage binary
    after its last epoch (8/8), to test it from <path>``."""
    where = f"at epoch {done + 1}/{epochs}" if done < epochs else f"after its last epoch ({done}/{epochs}), to test it"
    log.info("resuming stage %s %s from %s", name, where, path)


def stage_finished(i: int, n: int, st) -> None:
    """``stage 2/2 binary finished: <stage_result>``; from the pretrain cache: ``stage 1/2 pretrain reused the
    cached twin 3f2a.. (trained by <run dir>): ..., 0.1s (cached twin: saved 16.9s)``."""
    c = st.cache or {}
    how = f"reused the cached twin {c['key']} (trained by {c.get('trained_by')})" if c.get("hit") else "finished"
    log.info("stage %d/%d %s %s: %s", i, n, st.name, how, stage_result(st))


def stage_skipped(i: int, n: int, st) -> None:
    log.info("stage %d/%d %s: finished in an earlier attempt, skipped (%s)", i, n, st.name, stage_result(st))


# ----------------------------------------------------------------------------------------------------------
# Noise and the config
# ----------------------------------------------------------------------------------------------------------


def quiet() -> None:
    """Silence what a user cannot act on, precisely:

    - Lightning's INFO lines (``GPU available: ...``, ``Trainer.fit stopped: max_epochs reached``, the
      ``💡 Tip: ... litlogger / litmodels`` adverts), once per Trainer and stage: its loggers at WARNING;
    - torch's ``isinstance(treespec, LeafSpec) is deprecated`` FutureWarning, raised inside Lightning's own
      ``_pytree`` helpers (not onebit's code; Lightning will change it);
    - Lightning's "The `srun` command is available on your system but is not used" on every machine with ``srun``
      (a SLURM login node): onebit decides whether it runs in a SLURM job step and gives Lightning that decision
      (``onebit.core.cluster``), but Lightning's checkpoint connector still probes ``SLURMEnvironment.detect()``,
      which warns; inside a job step onebit says so in its own line instead.
    """
    import pytorch_lightning  # noqa: F401  (sets its loggers to INFO on import; quieten them after)

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def config_yaml(cfg, choices: dict | None = None) -> str:
    """The composed config as resolved YAML: the top-level values first, then one block per config group, headed
    by the option chosen for it (``# model: bireal18``)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    choices = choices or {}
    scalars = {k: v for k, v in plain.items() if not isinstance(v, dict)}
    blocks = ["# onebit config (resolved)\n" + OmegaConf.to_yaml(scalars)]
    for k, v in plain.items():
        if isinstance(v, dict):
            head = f"# {k}: {choices[k]}\n" if choices.get(k) else ""
            blocks.append(head + OmegaConf.to_yaml({k: v}))
    return "\n".join(blocks).rstrip("\n")
