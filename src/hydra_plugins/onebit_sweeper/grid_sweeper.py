"""onebit's grid sweeper: ``hydra/sweeper=grid``, the default of onebit's multiruns (conf/hydra/onebit.yaml).

Hydra's basic sweeper, unchanged (the cartesian product of ``params`` and the command line's sweeps, the same jobs
in the same order, ``max_batch_size``), plus seeds chosen by the data: with ``hydra.sweeper.seeds=auto`` it runs
the grid on a few seeds and adds seeds only to the comparisons still open (:mod:`.adaptive`):

    python src/train.py -m sign=approx,ste hydra.sweeper.seeds=auto       # sign=ste vs sign=approx, 3 to 10 seeds

A multirun that names no study (``study=`` neither on the command line nor in a ``sweeps=`` file) gets its own,
named by the options it sweeps (:func:`own_study`): ``-m sign=approx,ste shortcut=true,false`` is the study
``sweep-shortcut-sign``, not ``default``, so its runs never share a table with single runs or other ad-hoc sweeps,
and running the same command again (or with more values or seeds) finds the same study and skips what finished.
"""

# no `from __future__ import annotations`: Hydra executes plugin modules before sys.modules has them, and
# OmegaConf reads the dataclass annotations as types
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins import basic_sweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from hydra_plugins.onebit_sweeper import adaptive
from onebit.core.registry import study_overlays


@dataclass
class GridSweeperConf(adaptive.AdaptiveSeedsConf):
    _target_: str = "hydra_plugins.onebit_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="onebit")


class GridSweeper(basic_sweeper.BasicSweeper):
    """The basic sweeper; with ``seeds=auto``, the seeds chosen by the data (:func:`.adaptive.run`)."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 **settings: Any) -> None:
        super().__init__(max_batch_size=max_batch_size, params=dict(params or {}))
        self.settings = {k: settings.get(k, getattr(adaptive.AdaptiveSeedsConf, k)) for k in adaptive.FIELDS}
        self.sequential = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sequential = adaptive.design(self.settings)   # a bad setting stops the sweep here, before any job
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        arguments = own_study(self.config, arguments, self._parse_config())
        if self.sequential is None:
            return super().sweep(arguments)
        return adaptive.run(self, arguments, adaptive.grid_plan)


DEFAULT_STUDY = "default"  # conf/train.yaml's study
# seeds replicate a cell (sweeping only seeds keeps the study); the overlays whose options name their own study
# (onebit.core.registry.study_overlays: debug, experiment, sweeps, hparams_search) are left to name it, and so is
# Hydra's own sweeper group (hydra/sweeper=optuna and the like bring their own config)
NOT_A_FACTOR = ("seed",)
HYDRA_OWN_STUDY = ("hydra/sweeper",)


def own_study(config, arguments: list[str], params: list[str]) -> list[str]:
    """``arguments`` plus ``study=sweep-<swept keys>`` when the sweep's config has the default study and the command
    line names none (the sweep's own config takes the name too, so its directory is ``sweeps/<that study>/``), and
    no overlay that names its own study is chosen (``onebit.core.registry.study_overlays``: ``debug=``,
    ``experiment=``, ``sweeps=``, ``hparams_search=``; and Hydra's ``hydra/sweeper=``).
    The name is the sorted keys swept by the command line and ``hydra.sweeper.params``, seeds left out; a sweep of
    seeds alone keeps the default study (replicates of one config)."""
    if config.get("study") != DEFAULT_STUDY or any(a.lstrip("+~").startswith("study=") for a in arguments):
        return arguments
    overrides = OverridesParser.create().parse_overrides([*params, *arguments])
    if any(o.key_or_group in (*study_overlays(), *HYDRA_OWN_STUDY) for o in overrides):
        return arguments
    swept = sorted({o.key_or_group for o in overrides if o.is_sweep_override()} - set(NOT_A_FACTOR))
    if not swept:
        return arguments
    name = "sweep-" + "-".join(k.replace("/", ".") for k in swept)
    with open_dict(config):
        config.study = name
    print(f"onebit sweep: study={name} (no study= given: named by the swept options; study=NAME names it)",
          flush=True)
    return [*arguments, f"study={name}"]
