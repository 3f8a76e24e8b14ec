"""The training algorithm: one LightningModule for every stage (real-valued pretraining, binary, BN retraining).

Loss: cross-entropy (optional label smoothing); in a distilled stage (``distill=twin|teacher``), the training loss
is ``onebit.nn.distill.distillation_loss`` against a frozen real-valued teacher (validation and test losses stay
cross-entropy). Metrics: top-1 / top-5 accuracy (torchmetrics), accumulated on
the device and computed once per epoch, so logging never synchronises per step. The best validation top-1 of
the stage is not logged as a metric of its own: it is ``val/top1``'s maximum (the record's ``val/top1_best``,
W&B's ``val/top1`` summary through ``define_metric``, ``onebit.tracking.loggers``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from types import SimpleNamespace

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from onebit.core.registry import TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS, VAL_TOP1, VAL_TOP5
from onebit.nn.distill import BlockOutputs, distillation_loss
from onebit.nn.optim import ROLE_DECAY_KEYS, clip_latent_weights, param_groups
from onebit.records.recipe import Stage
from onebit.training.build import stage_model


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss: the job stops with this error instead of training on garbage."""


class Classifier(pl.LightningModule):
    """Image classification with any onebit model.

    Args:
        config: the run's resolved config (plain data, as in the record): the optimizer (with the stage's
            overrides; its ``*weight_decay`` per parameter role and ``latent_weight_clip`` are onebit's, see
            ``onebit.nn.optim``), the schedule (stepped once per epoch over the stage's epochs), label smoothing.
        stage: the stage (an ``onebit.records.recipe.Stage`` as plain data, optimizer overrides as a mapping).
        in_channels, num_classes, default_width: the data's, which the model is built for (top-5 becomes
            top-min(5, classes)).
        model: the network (binary model or its real-valued twin); ``None``: a fresh one for the stage
            (``onebit.training.build.stage_model``).
        teacher: the real-valued teacher of a distilled stage (``onebit.training.teacher``), or ``None``. It is
            frozen (eval mode, no gradients) and held outside the module's children: not in the optimizer, not
            in the checkpoint's state dict, never switched to train mode by Lightning; it moves to the student's
            device when fitting starts and runs under ``torch.no_grad`` in every training step.

    Everything but ``model`` and ``teacher`` is saved as plain hyperparameters in every checkpoint (``checkpoint
    ["hyper_parameters"]``, not sent to the logger: the W&B config is the run's options), so
    ``Classifier.load_from_checkpoint(path)`` rebuilds the module, ready to evaluate or to train on, with no
    arguments. :meth:`for_stage` builds one for a stage of a config.
    """

    nonfinite_check_every = 50  # steps between host reads of the non-finite-loss watch on an accelerator
    deferred_nonfinite_check = False  # True: the accelerator's deferred check on the CPU too (tests)

    def __init__(self, config: dict, stage: dict, in_channels: int, num_classes: int, default_width: int | None = None,
                 model: nn.Module | None = None, teacher: nn.Module | None = None):
        super().__init__()
        if OmegaConf.is_config(config):
            config = OmegaConf.to_container(config, resolve=True)
        self.save_hyperparameters(ignore=["model", "teacher"], logger=False)
        if model is None:
            shape = SimpleNamespace(in_channels=in_channels, num_classes=num_classes, default_width=default_width)
            spec = Stage(**{**stage, "optimizer": tuple(sorted(stage["optimizer"].items()))})
            model = stage_model(OmegaConf.create(config), shape, spec)
        self.model = model
        self._teacher = () if teacher is None else (teacher.eval().requires_grad_(False),)  # a tuple: no child
        self.distill_cfg = dict(config.get("distill") or {}) if teacher is not None else None
        self._blocks: tuple[BlockOutputs, BlockOutputs] | None = None  # (student's, teacher's) while fitting
        optimizer = {**config["optimizer"], **stage["optimizer"]}
        self.decays = {role: optimizer.pop(key) for role, key in ROLE_DECAY_KEYS.items()}
        clip = optimizer.pop("latent_weight_clip")
        self.latent_weight_clip = clip if stage["model"] == "binary" else None
        self.optimizer_factory, self.scheduler_factory = instantiate(optimizer), instantiate(config["scheduler"])
        self.epochs, self.label_smoothing = stage["epochs"], config["label_smoothing"]
        k5 = min(5, num_classes)
        acc = lambda k: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, top_k=k)  # noqa: E731
        self.val_top1, self.val_top5 = acc(1), acc(k5)
        self.test_top1, self.test_top5 = acc(1), acc(k5)
        self.history: list[dict] = []  # one entry per epoch: the curves of analysis/plots.py
        self._loss_sum, self._correct, self._seen, self._batches = torch.zeros(()), torch.zeros(()), 0, 0
        self._epoch_started: float | None = None
        self._watch: torch.Tensor | None = None  # the non-finite-loss watch of an epoch on an accelerator
        self.first_step_time: float | None = None  # wall-clock time of the first training step (start-up bench)

    @classmethod
    def for_stage(cls, cfg: DictConfig | dict, stage, data, model: nn.Module | None = None,
                  teacher: nn.Module | None = None) -> Classifier:
        """The module that trains ``stage`` (an ``onebit.records.recipe.Stage``) on ``data``, around ``model``
        (``None``: a freshly built one), distilled from ``teacher`` when given."""
        spec = {**asdict(stage), "optimizer": dict(stage.optimizer)}
        return cls(cfg, spec, data.in_channels, data.num_classes, getattr(data, "default_width", None), model,
                   teacher)

    def forward(self, x):
        return self.model(x)

    def _loss(self, logits, y):
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self._teacher:
            logits, loss = self._distilled(x, y)
        else:
            logits = self.model(x)
            loss = self._loss(logits, y)
        self._watch_loss(loss, batch_idx)
        # training metrics are accumulated on the device and logged once per epoch (on_train_epoch_end): no
        # per-step logging bookkeeping and no host synchronisation inside the epoch
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach()
        self._correct = self._correct.to(loss.device) + (logits.detach().argmax(1) == y).sum()
        self._seen += len(y)
        self._batches += 1
        return loss

    def _distilled(self, x, y):
        """The student's logits and the distilled training loss (``onebit.nn.distill.distillation_loss``): the
        teacher runs in eval mode under ``torch.no_grad``; block outputs are kept only for attention transfer."""
        d, (teacher,) = self.distill_cfg, self._teacher
        with (self._blocks[0].capture() if self._blocks else contextlib.nullcontext(())) as student_blocks:
            logits = self.model(x)
        with torch.no_grad(), (self._blocks[1].capture() if self._blocks else contextlib.nullcontext(())) \
                as teacher_blocks:
            teacher_logits = teacher(x)
        loss = distillation_loss(logits, teacher_logits, y, alpha=d["alpha"], temperature=d["temperature"],
                                 label_smoothing=self.label_smoothing, attention_weight=d["attention_weight"],
                                 student_blocks=student_blocks, teacher_blocks=teacher_blocks)
        return logits, loss

    def on_fit_start(self):
        """A distilled stage: the teacher on the student's device, and the block hooks of attention transfer."""
        if self._teacher:
            self._teacher[0].to(self.device)
            if self.distill_cfg["attention_weight"] > 0:
                self._blocks = (BlockOutputs(self.model), BlockOutputs(self._teacher[0]))

    def on_fit_end(self):
        for hooks in self._blocks or ():
            hooks.remove()
        self._blocks = None

    def _watch_loss(self, loss, batch_idx: int) -> None:
        """Stop a run whose training loss is not finite, without a host synchronisation per step on an accelerator.

        On the CPU the check is immediate (reading a CPU tensor costs nothing). Elsewhere the first non-finite loss
        of the epoch is remembered on the device (its batch index and value, no sync) and read every
        :attr:`nonfinite_check_every` steps and after the epoch's last batch, before its validation and
        checkpoints: a NaN run stops within that many steps, names the batch where it started, and never writes a
        checkpoint of NaN weights."""
        bad = ~torch.isfinite(loss.detach())
        if loss.device.type == "cpu" and not self.deferred_nonfinite_check:
            if bad:
                self._nonfinite(float(loss.detach()), batch_idx)
            return
        w = self._watch  # [this step's batch index, first bad batch index (-1: none), its loss], on the device
        if w is None or w.device != loss.device:
            w = self._watch = torch.full((3,), -1.0, device=loss.device, dtype=torch.float64)
            w[0].fill_(batch_idx - 1)  # a kernel argument, not a host-to-device copy
        w[0].add_(1)
        fresh = bad & (w[1] < 0)
        w[1:] = torch.where(fresh, torch.stack([w[0], loss.detach().double()]), w[1:])
        last = self._trainer is None or batch_idx + 1 >= self.trainer.num_training_batches
        if last or (batch_idx + 1) % self.nonfinite_check_every == 0:
            first = w.tolist()  # the one host synchronisation per nonfinite_check_every steps
            if first[1] >= 0:
                self._nonfinite(first[2], int(first[1]))

    def _nonfinite(self, value: float, batch_idx: int):
        raise NonFiniteLossError(f"non-finite training loss ({value}) at epoch {self.current_epoch}, batch "
                                 f"{batch_idx}: lower optimizer.lr or check the data")

    def on_train_batch_start(self, batch, batch_idx):
        if self.first_step_time is None:
            self.first_step_time = time.time()

    def on_train_epoch_start(self):
        self._watch = None
        self._close_epoch_timer()
        self._epoch_started = time.perf_counter()

    def on_train_end(self):
        self._close_epoch_timer()

    def _close_epoch_timer(self):
        """An epoch's ``seconds``: from its start to the next one's (training, validation, checkpoint, logging)."""
        if self._epoch_started is not None and self.history:
            self.history[-1].setdefault("seconds", time.perf_counter() - self._epoch_started)
        self._epoch_started = None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.latent_weight_clip is not None:
            clip_latent_weights(self.model, self.latent_weight_clip)

    def _eval_step(self, batch, split: str, top1, top5):
        x, y = batch
        logits = self.model(x)
        top1(logits, y), top5(logits, y)
        # epoch-level only: the loss is reduced across DDP ranks once per epoch, never per step
        self.log(f"{split}/loss", self._loss(logits, y), on_step=False, on_epoch=True, batch_size=len(y),
                 sync_dist=True)
        self.log(f"{split}/top1", top1, on_step=False, on_epoch=True)
        self.log(f"{split}/top5", top5, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_top1, self.val_top5)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        m = self.trainer.callback_metrics
        self._epoch_entry().update({k: float(m[k]) for k in (VAL_LOSS, VAL_TOP1, VAL_TOP5) if k in m})

    def _epoch_entry(self) -> dict:
        if not self.history or self.history[-1]["epoch"] != self.current_epoch:
            self.history.append({"epoch": self.current_epoch})
        return self.history[-1]

    def on_train_epoch_end(self):
        """Runs after the epoch's validation: completes this epoch's history entry with its training metrics
        (one host sync per epoch)."""
        if self._batches:
            loss, top1 = self._loss_sum / self._batches, self._correct / self._seen
            self.log(TRAIN_LOSS, loss, sync_dist=True)
            self.log(TRAIN_TOP1, top1, sync_dist=True)
            self._epoch_entry().update({TRAIN_LOSS: float(loss), TRAIN_TOP1: float(top1)})
        self._loss_sum, self._correct, self._seen, self._batches = torch.zeros(()), torch.zeros(()), 0, 0

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_top1, self.test_top5)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(param_groups(self.model, self.decays))
        scheduler = self.scheduler_factory(optimizer, self.epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["onebit"] = {"history": self.history}

    def on_load_checkpoint(self, checkpoint):
        self.history = list(checkpoint.get("onebit", {}).get("history", []))

