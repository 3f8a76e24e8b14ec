"""Your own Lightning callbacks: the ``callbacks`` option group (conf/callbacks/, as in lightning-hydra-template).

Each entry of the config's ``callbacks`` node is one callback, ``<name>: {_target_: <class>, <arguments>}``:
``callbacks=early_stopping``, ``callbacks=[early_stopping,rich_progress]``, or any class with
``+callbacks.<name>._target_=<module.Class> [+callbacks.<name>.<argument>=<value> ...]``; ``callbacks=default`` has
none. Every stage's Trainer gets fresh instances (an early stop's patience counts per stage).

The rules (:func:`user_callbacks`, :func:`merge`):

- a user's callback is **added beside** onebit's own (``last.ckpt`` / ``best.ckpt``, the per-epoch lines, the
  learning-rate monitor, the diagnostics): it never replaces or disables them. A user's ``ModelCheckpoint`` writes
  its own files next to onebit's, which resume and eval keep reading;
- the one exception is the **progress bar**: Lightning shows one, so a user's progress bar (``rich_progress``,
  any ``ProgressBar``) takes the place of onebit's bar, and onebit's per-epoch lines then go to the log file only
  (as under its own bar). Two progress bars, or a progress bar with ``trainer.enable_progress_bar=false``, are
  refused;
- an entry that is not a mapping with a ``_target_``, a class that refuses its arguments, or an object that is not
  a Lightning ``Callback`` is refused in one line before any training (``onebit.training.checks``);
- whether a callback can change a job's result decides whether it is in the job's identity
  (``onebit.records.identity.NEUTRAL_CALLBACKS``): an early stop is, a progress bar is not.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ProgressBar

from onebit.core.errors import ConfigError, cause_line

GROUP = "callbacks"


def user_callbacks(cfg: DictConfig) -> list[Callback]:
    """Fresh instances of the config's ``callbacks`` (empty without any), in their config order; refuses in one
    line what the module docstring lists."""
    node = cfg.get(GROUP) or {}
    specs = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    out: list[tuple[str, Callback]] = []
    for name, spec in specs.items():
        if spec is None:  # callbacks.<name>=null drops an entry of an option
            continue
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ConfigError(f"{GROUP}.{name}={spec!r} is invalid: a callback is a _target_ (a Lightning Callback "
                              f"class) and its arguments, e.g. +{GROUP}.{name}._target_="
                              "pytorch_lightning.callbacks.EarlyStopping")
        try:
            callback = instantiate(spec)
        except Exception as e:
            raise ConfigError(f"{GROUP}.{name} is refused by {spec['_target_']}: {cause_line(e)}") from e
        if not isinstance(callback, Callback):
            raise ConfigError(f"{GROUP}.{name}: {spec['_target_']} is not a Lightning Callback "
                              "(pytorch_lightning.callbacks.Callback); choose a callback class")
        out.append((name, callback))
    bars = [name for name, c in out if isinstance(c, ProgressBar)]
    if len(bars) > 1:
        raise ConfigError(f"{GROUP}: {', '.join(f'{GROUP}.{b}' for b in bars)} are all progress bars; Lightning "
                          "shows one: keep one of them")
    if bars and cfg.get("trainer", {}).get("enable_progress_bar") is False:
        raise ConfigError(f"{GROUP}.{bars[0]} is a progress bar but trainer.enable_progress_bar=false: drop one of "
                          "them")
    return [c for _, c in out]


def shows_bar(callbacks: list[Callback]) -> bool:
    """Whether the user's callbacks bring a progress bar of their own."""
    return any(isinstance(c, ProgressBar) for c in callbacks)


def merge(onebit: list[Callback], user: list[Callback]) -> list[Callback]:
    """onebit's callbacks, then the user's; a user's progress bar takes the place of onebit's bar."""
    if shows_bar(user):
        onebit = [c for c in onebit if not isinstance(c, ProgressBar)]
    return [*onebit, *user]
