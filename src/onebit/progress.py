"""What a run shows while it runs, and where it is kept.

- **Interactive** (stderr is a terminal): a Lightning TQDM bar per stage (:class:`StageBar`), on stderr, described
  by the stage's name and epoch (``binary 3/8``), showing the running training loss and the last val top-1.
- **Every run**: one INFO line per epoch through ``logging.getLogger("onebit")`` (:class:`EpochLog`), plus lines
  when a stage starts, ends, resumes, is skipped or comes from the pretrain cache (:func:`stage_started` ...), so
  Hydra's per-job log file (``<job dir>/train.log``) holds the run's story. Where a bar is shown, the per-epoch
  lines go to the log file only (:func:`info_to_file`): the bar already shows them on the terminal.
- ``trainer.enable_progress_bar``: ``null`` (default) = auto (:func:`want_bar`), ``true`` / ``false`` force it.
- :func:`quiet` silences what a user cannot act on (Lightning's tips and start-up banner, one torch deprecation
  inside Lightning), each by its logger or by message and category; :func:`config_yaml` is ``print_config=true``.

Only global rank zero shows bars and writes lines: Lightning disables the bar in other DDP ranks, and
:class:`EpochLog` and the stage lines check the rank.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf

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


def want_bar(setting) -> bool:
    """``trainer.enable_progress_bar``: ``true`` / ``false`` as given; ``null`` (auto) shows a bar when stderr is
    a terminal, in rank zero, unless a parallel launcher (joblib, submitit) runs jobs side by side: there each job
    logs its lines instead of several bars fighting over one terminal."""
    if setting is not None:
        return bool(setting)
    from onebit.jobs import global_rank

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


def callbacks(stage: str, show_bar: bool, resume_from=None) -> list[Callback]:
    """The callbacks of one stage's Trainer: the per-epoch log lines, and the bar when ``show_bar``."""
    return [EpochLog(stage, show_bar, resume_from), *([StageBar(stage)] if show_bar else [])]


def _metric(trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


class StageBar(TQDMProgressBar):
    """Lightning's TQDM bar on stderr, one per stage: ``binary 3/8: 45%|...| 20/44 [..., loss=0.53, val_top1=0.87]``.
    ``loss`` is the running mean training loss of the epoch (read from the device at most twice a second), then
    the epoch's ``train/loss``; ``val_top1`` is the last validation's ``val/top1``. The last epoch's bar stays on
    the terminal; validation and test bars are cleared when they end."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage
        self._sum, self._n, self._shown, self._read_at = None, 0, None, 0.0

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

    def on_train_epoch_start(self, trainer, *_) -> None:  # Lightning's, described "<stage> <epoch>/<epochs>"
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(f"{self.stage} {trainer.current_epoch + 1}/{trainer.max_epochs}")
        self._sum, self._n, self._shown = None, 0, None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # Lightning's, without renaming it "Validation DataLoader 0"
            self.val_progress_bar.reset(total=convert_inf(self.total_val_batches_current_dataloader))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # Lightning's, without renaming it "Testing DataLoader 0"
            self.test_progress_bar.reset(total=convert_inf(self.total_test_batches_current_dataloader))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach()
            self._sum = loss if self._sum is None else self._sum + loss
            self._n += 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        self._sum, self._n = None, 0  # the bar that stays shows the last epoch's train/loss
        if self._train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict:
        if self._n and (self._shown is None or time.monotonic() - self._read_at > 0.5):
            self._shown, self._read_at = float(self._sum) / self._n, time.monotonic()
        loss = self._shown if self._n else _metric(trainer, "train/loss")
        val = _metric(trainer, "val/top1")
        return {**({"loss": f"{loss:.4f}"} if loss is not None else {}),
                **({"val_top1": f"{val:.4f}"} if val is not None else {})}


class EpochLog(Callback):
    """One INFO line per finished epoch (:func:`epoch_line`), from the module's ``history`` entry (the values the
    record keeps); with ``resume_from``, a line saying where the stage resumes. Global rank zero only.

    A LightningModule's ``on_train_epoch_end`` runs after the callbacks' (Lightning calls non-checkpoint callbacks
    first), so an epoch's line is written when the next epoch starts or training ends, once its entry is
    complete; its ``seconds`` run from the epoch's start to then (as the history's do)."""

    def __init__(self, stage: str, to_file_only: bool = False, resume_from=None):
        self.stage, self.to_file_only, self.resume_from = stage, to_file_only, resume_from
        self._epoch, self._t0 = None, 0.0

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Lightning restores ``ckpt_path`` (before training, also when no epoch is left to train)."""
        if not trainer.is_global_zero:
            return
        try:  # epochs the checkpoint has finished ("processed" counts an epoch before its checkpoint is saved)
            done = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError):
            done = int(checkpoint.get("epoch", -1)) + 1
        where = (f"at epoch {done + 1}/{trainer.max_epochs}" if done < trainer.max_epochs
                 else f"after its last epoch ({done}/{trainer.max_epochs}), to test it")
        log.info("resuming stage %s %s from %s", self.stage, where, self.resume_from or "a checkpoint")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)
        self._epoch, self._t0 = trainer.current_epoch, time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module) -> None:
        if self._epoch is None or not trainer.is_global_zero:
            return
        entry = next((h for h in reversed(getattr(pl_module, "history", [])) if h.get("epoch") == self._epoch), None)
        if entry is None:  # a module without onebit's history: what it logged
            entry = {k: _metric(trainer, k) for k in ("train/loss", "train/top1", "val/loss", "val/top1")}
        line = epoch_line(self.stage, self._epoch + 1, trainer.max_epochs, entry, time.perf_counter() - self._t0)
        (info_to_file if self.to_file_only else log.info)(line)
        self._epoch = None


def epoch_line(stage: str, epoch: int, epochs: int, m: dict, seconds: float) -> str:
    """``binary epoch 3/8: train loss 0.5321 top-1 0.8123, val loss 0.4011 top-1 0.8852, 12.3s``."""
    def f(key):
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    return (f"{stage} epoch {epoch}/{epochs}: train loss {f('train/loss')} top-1 {f('train/top1')}, "
            f"val loss {f('val/loss')} top-1 {f('val/top1')}, {seconds:.1f}s")


# ----------------------------------------------------------------------------------------------------------
# Stage lines (onebit.stages calls these in rank zero)
# ----------------------------------------------------------------------------------------------------------


def _bits(st) -> str:
    eff = st.efficiency or {}
    return f" (A{eff['activations']}/W{eff['weights']})" if "activations" in eff else ""


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def stage_started(i: int, n: int, stage, st) -> None:
    """``stage 2/3 binary: binary model (A1/W1), 8 epochs, initialised from pretrain``."""
    init = f"initialised from {stage.init}" if stage.init else "fresh initialisation"
    if stage.cached:
        init += " (unless the pretrain cache has this twin)"
    extra = (", BatchNorm only" if stage.trainable == "batchnorm" else "") + (
        ", weights fixed to +-1" if stage.fixed_weights else "")
    log.info("stage %d/%d %s: %s model%s, %s, %s%s", i, n, stage.name, stage.model, _bits(st),
             _n(stage.epochs, "epoch"), init, extra)


def stage_finished(st) -> None:
    """``stage binary finished in 23.4s: val top-1 0.8852 (best 0.8852), test top-1 0.9000``."""
    m = st.metrics
    log.info("stage %s finished in %.1fs: val top-1 %.4f (best %.4f), test top-1 %.4f", st.name, st.seconds or 0,
             m.get("val/top1", float("nan")), m.get("val/top1_best", float("nan")), m.get("test/top1", float("nan")))


def stage_skipped(i: int, n: int, st) -> None:
    log.info("stage %d/%d %s: finished in an earlier attempt, skipped (val top-1 %.4f)", i, n, st.name,
             st.metrics.get("val/top1", float("nan")))


def cache_hit(i: int, n: int, st) -> None:
    """``stage 1/2 pretrain: reused the cached twin 3f2a.. (trained by <run dir>): took 0.1s, saved 16.9s``."""
    c = st.cache
    log.info("stage %d/%d %s: reused the cached twin %s (trained by %s): took %.1fs, saved %.1fs of training; "
             "val top-1 %.4f", i, n, st.name, c["key"], c.get("trained_by"), st.seconds or 0,
             c.get("saved_seconds") or 0, st.metrics.get("val/top1", float("nan")))


# ----------------------------------------------------------------------------------------------------------
# Noise and the config
# ----------------------------------------------------------------------------------------------------------


def quiet() -> None:
    """Silence what a user cannot act on, precisely:

    - Lightning's INFO lines (``GPU available: ...``, ``Trainer.fit stopped: max_epochs reached``, the
      ``💡 Tip: ... litlogger / litmodels`` adverts), once per Trainer and stage: its loggers at WARNING;
    - torch's ``isinstance(treespec, LeafSpec) is deprecated`` FutureWarning, raised inside Lightning's own
      ``_pytree`` helpers (not onebit's code; Lightning will change it);
    - Lightning's "number of training batches is smaller than the logging interval" for short runs: onebit logs
      once per epoch (``on_epoch`` metrics, ``LearningRateMonitor(logging_interval="epoch")``), so
      ``log_every_n_steps`` has nothing to act on.
    """
    import pytorch_lightning  # noqa: F401  (sets its loggers to INFO on import; quieten them after)
    from lightning_fabric.utilities.warnings import PossibleUserWarning

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                            r"interval", category=PossibleUserWarning)


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
