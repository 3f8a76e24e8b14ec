"""Bop, the binary optimizer (Helwegen et al., NeurIPS 2019, "Latent weights do not exist: Rethinking binarized
neural network optimization", Algorithm 1; larq's ``larq.optimizers.Bop``): binary weights are flipped, not
trained through latent real values; a second optimizer (Adam, SGD...) trains every real-valued parameter.

``optimizer=bop`` (conf/optimizer/bop.yaml) builds :class:`Bop` from the role-tagged parameter groups of
``onebit.nn.optim.param_groups``: the groups of role ``binary`` get Bop's rule, the others (``real``, ``bn``)
are handed to the inner optimizer. One optimizer object holds both, so Lightning, the learning-rate schedule,
LearningRateMonitor and checkpoints see one optimizer (its ``param_groups`` are Bop's followed by the inner
optimizer's, its ``state`` is shared with the inner optimizer: ``state_dict`` / ``load_state_dict`` round trip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from onebit.core.errors import ConfigError

BINARY_ROLE = "binary"


def _larq_sign(x: torch.Tensor) -> torch.Tensor:
    """``lq.math.sign(x) = sign(sign(x) + 0.1)``: sign with ``sign(0) = +1`` (larq/math.py)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class Bop(torch.optim.Optimizer):
    """Bop on the ``binary`` parameter groups, the inner optimizer on the rest.

    For each binary weight ``w`` with gradient ``g_t`` (Helwegen et al. 2019, Algorithm 1; larq
    ``optimizers.py``, ``Bop._resource_apply_dense``)::

        m_t = m_{t-1} + gamma (g_t - m_{t-1}) = (1 - gamma) m_{t-1} + gamma g_t     (m_0 = 0)
        s_t = sign(-sign(s_{t-1} m_t - tau) s_{t-1})                                  (larq's line, on s = sign(w))

    i.e. the sign flips, ``s_t = -s_{t-1}``, when ``m_t`` agrees with it beyond the threshold
    (``s_{t-1} m_t > tau``: ``|m_t| > tau`` and ``sign(m_t) = sign(w_{t-1})``) and stays otherwise; larq's outer
    sign maps 0 to +1, so at exactly ``s m_t = tau`` the sign becomes +1. ``sign(0) = +1`` throughout, as in
    onebit's binarizers.

    What differs from larq, deliberately: larq assigns ``w_t = s_t`` (weights become +-1); here a flip negates the
    weight, ``w_t = -w_{t-1}`` (a weight of exactly 0 becomes -1), so ``sign(w_t) = s_t`` as in larq and the weight
    binarizer's forward is the same for ``weight=plain``, while a magnitude-aware scale (Bi-Real: mean |w| per
    output channel) keeps the magnitudes the weights started from (the pretrained twin's), fixed during training.

    Args:
        params: parameter groups (``onebit.nn.optim.param_groups``: dicts with ``role``), or plain parameters
            (then none is binary and everything goes to the inner optimizer).
        inner: a factory ``inner(groups, lr=lr, weight_decay=weight_decay)`` of the optimizer of the other groups
            (e.g. a partial ``torch.optim.Adam``).
        lr, weight_decay: the inner optimizer's learning rate and its default decay (for groups without their own).
        threshold: ``tau`` (larq's default 1e-8).
        gamma: the adaptivity rate ``gamma`` (larq's default 1e-4). It is the binary groups' ``lr`` entry, so the
            stage's schedule decays it like a learning rate (Helwegen et al. decay gamma; larq takes a schedule),
            and LearningRateMonitor logs it as ``lr-Bop/binary``.

    The binary groups' ``weight_decay`` must be 0: there is no latent weight to decay (refused otherwise).
    """

    def __init__(self, params: Iterable, inner: Callable[..., torch.optim.Optimizer], lr: float = 1e-3,
                 threshold: float = 1e-8, gamma: float = 1e-4, weight_decay: float = 0.0):
        groups = [g if isinstance(g, Mapping) else {"params": [g]} for g in params]
        if groups and not any(isinstance(g, Mapping) and "role" in g for g in groups):
            groups = [{"params": [p for g in groups for p in g["params"]]}]  # plain parameters: all real-valued
        if not 0 < gamma <= 1:
            raise ValueError(f"optimizer.gamma={gamma!r} is invalid: Bop's adaptivity rate must be in (0, 1]")
        if threshold < 0:
            raise ValueError(f"optimizer.threshold={threshold!r} is invalid: Bop's threshold must be >= 0")
        binary = [dict(g) for g in groups if g.get("role") == BINARY_ROLE]
        rest = [dict(g) for g in groups if g.get("role") != BINARY_ROLE]
        for g in binary:
            if g.get("weight_decay", 0.0):
                raise ValueError(f"optimizer.binary_weight_decay={g['weight_decay']!r} does not apply to Bop "
                                 "(binary weights have no latent value to decay): set it to 0")
            g.update(lr=gamma, threshold=threshold)
        # the inner optimizer fills its defaults into its groups (the same dicts, shared below)
        self.inner = inner(rest, lr=lr, weight_decay=weight_decay) if rest else None
        self._binary_groups = len(binary)
        super().__init__([*binary, *(self.inner.param_groups if self.inner else [])], {})
        self._link()

    def _link(self) -> None:
        """One list of groups and one state for both: Bop's groups first, then the inner optimizer's (the same
        dicts), and one ``state`` mapping (the parameters differ, so their entries never collide)."""
        if self.inner is not None:
            self.inner.param_groups = self.param_groups[self._binary_groups:]
            self.state.update(self.inner.state)
            self.inner.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._link()  # load_state_dict made new group dicts and a new state: hand them to the inner optimizer

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups[:self._binary_groups]:
            gamma, tau = group["lr"], group["threshold"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                state = self.state[w]
                if "m" not in state:
                    state["m"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                m = state["m"]
                m.add_(w.grad - m, alpha=gamma)  # m_t = m_{t-1} + gamma (g_t - m_{t-1})
                s = _larq_sign(w)
                s_t = _larq_sign(-torch.sign(s * m - tau) * s)  # larq: sign(-sign(var * m_t - threshold) * var)
                w.copy_(torch.where(s_t == s, w, torch.where(w == 0, s_t, -w)))
        if self.inner is not None:
            self.inner.step()
        return loss


def check_bop(optimizer: Mapping, target_class: type | None) -> None:
    """Refuse, in one line, the latent-weight options that mean nothing under Bop (there is no latent weight):
    ``latent_weight_clip`` (must be null) and ``binary_weight_decay`` (must be 0). ``target_class``: the
    optimizer config's ``_target_`` class (a no-op unless it is :class:`Bop` or a subclass)."""
    if not (isinstance(target_class, type) and issubclass(target_class, Bop)):
        return
    if optimizer.get("latent_weight_clip") is not None:
        raise ConfigError(f"optimizer.latent_weight_clip={optimizer['latent_weight_clip']!r} does not apply to "
                          "optimizer=bop (Bop flips binary weights; there is no latent weight to clip): set it to null")
    if optimizer.get("binary_weight_decay"):
        raise ConfigError(f"optimizer.binary_weight_decay={optimizer['binary_weight_decay']!r} does not apply to "
                          "optimizer=bop (Bop flips binary weights; there is no latent weight to decay): set it to 0")
