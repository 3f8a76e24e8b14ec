"""Knowledge distillation from a real-valued teacher (``conf/distill/``): the losses and the block outputs they read.

The training loss of a distilled stage (``onebit.training.module.Classifier``) is

    L = alpha * L_KD + (1 - alpha) * L_CE + beta * L_AT

- ``L_KD`` (:func:`distribution_loss`): ReActNet's distributional loss (Liu et al., ECCV 2020, Eq. 4), the
  Kullback-Leibler divergence of the student's class distribution from the teacher's, at Hinton et al.'s (2015)
  temperature ``T`` and scaled by ``T^2``;
- ``L_CE``: cross-entropy with the labels (``label_smoothing`` as in every stage); ``alpha`` = ``distill.alpha``
  (ReActNet: 1, the distributional loss alone);
- ``L_AT`` (:func:`attention_loss`): Real-to-Binary's attention transfer (Martinez et al., ICLR 2020, Eq. 2) on
  the outputs of the residual blocks (:func:`blocks`); ``beta`` = ``distill.attention_weight`` (0: off).

Only the training loss is distilled: validation and test losses and accuracies are the cross-entropy and top-k of
every stage.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STAGES = ("layer1", "layer2", "layer3", "layer4")  # a ResNet's stages (onebit's Bi-Real nets and torchvision's)


def distribution_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """ReActNet's distributional loss (Liu et al., ECCV 2020, Eq. 4) at temperature ``T`` (Hinton et al. 2015):

        L_KD = T^2 * (1/n) sum_i sum_c p^T_c(X_i) log(p^T_c(X_i) / p^S_c(X_i))
             = T^2 * (1/n) sum_i KL(p^T(X_i) || p^S(X_i)),     p_c(X) = softmax(z(X) / T)_c

    over the ``n`` images of the batch and the classes ``c``; ``z`` are the logits of the teacher (``T``) and the
    student (``S``). ReActNet writes it ``-(1/n) sum_c sum_i p^T_c log(p^S_c / p^T_c)`` at T = 1. Hinton et al.
    (section 2) soften both distributions with ``T`` and multiply the loss by ``T^2``, because the gradient of
    the soft targets' term scales as ``1/T^2``: its weight against cross-entropy then does not change with ``T``.
    Computed in float32 (stable under mixed precision); the teacher's logits get no gradient."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    return t * t * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def attention_map(a: Tensor) -> Tensor:
    """The normalised spatial attention map of a block output ``A`` (N, C, H, W) (Zagoruyko & Komodakis, ICLR
    2017, section 3.1; Real-to-Binary, Martinez et al., ICLR 2020, Eq. 2):

        Q = sum_{c=1}^{C} |A_c|^2   (flattened to H*W values per image),   Q / ||Q||_2

    Returns (N, H*W)."""
    q = a.float().pow(2).sum(dim=1).flatten(1)
    return F.normalize(q, p=2, dim=1)


def attention_loss(student: list[Tensor], teacher: list[Tensor], p: int = 2) -> Tensor:
    """Real-to-Binary's attention transfer (Martinez et al., ICLR 2020, Eq. 2):

        L_AT = sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p     (p = 2)

    over the matched block outputs ``j`` of the student (``S``) and the teacher (``T``) (:func:`attention_map`),
    averaged over the images of the batch. Channel counts may differ (``Q`` sums over channels); spatial sizes
    must match."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"attention transfer needs matching block outputs: {len(student)} of the student, "
                         f"{len(teacher)} of the teacher")
    return sum((attention_map(s) - attention_map(t.detach())).norm(p=p, dim=1).mean()
               for s, t in zip(student, teacher))


def distillation_loss(logits: Tensor, teacher_logits: Tensor, y: Tensor, *, alpha: float, temperature: float,
                      label_smoothing: float = 0.0, attention_weight: float = 0.0,
                      student_blocks: list[Tensor] = (), teacher_blocks: list[Tensor] = ()) -> Tensor:
    """``L = alpha * L_KD + (1 - alpha) * L_CE + beta * L_AT`` (the module docstring; ``beta`` =
    ``attention_weight``): :func:`distribution_loss`, cross-entropy with ``label_smoothing``,
    :func:`attention_loss`. A term whose weight is 0 is not computed."""
    loss = alpha * distribution_loss(logits, teacher_logits, temperature) if alpha > 0 else logits.new_zeros(())
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if attention_weight > 0:
        loss = loss + attention_weight * attention_loss(list(student_blocks), list(teacher_blocks))
    return loss


def blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of a ResNet, in order: the children of its stages ``layer1`` .. ``layer4`` (onebit's
    Bi-Real / Res / Plain nets and torchvision's ResNets name them so); ``[]`` for a model without them
    (BinaryDenseNet). A Bi-Real student and its real-valued twin have the same blocks."""
    return [b for name in STAGES for b in (getattr(model, name, None) or ())]


@torch.no_grad()
def block_shapes(model: nn.Module, input_size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The output shapes (C, H, W) of :func:`blocks` for one image of ``input_size``, in eval mode (nothing of the
    model changes)."""
    outputs = BlockOutputs(model)
    was = model.training
    model.eval()
    try:
        with outputs.capture() as found:
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was)
        outputs.remove()
    return [tuple(o.shape[1:]) for o in found]


class BlockOutputs:
    """Forward hooks on a model's :func:`blocks` that keep their outputs while :meth:`capture` is open (and only
    then: validation and test forwards keep nothing)."""

    def __init__(self, model: nn.Module):
        self.outputs: list[Tensor] = []
        self.active = False
        self.handles = [b.register_forward_hook(self._hook) for b in blocks(model)]

    def _hook(self, module, inputs, output) -> None:
        if self.active:
            self.outputs.append(output)

    @contextlib.contextmanager
    def capture(self):
        self.outputs, self.active = [], True
        try:
            yield self.outputs
        finally:
            self.active = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
