"""onebit's grid sweeper: ``hydra/sweeper=grid``, the default of onebit's multiruns (conf/hydra/onebit.yaml).

Hydra's basic sweeper, unchanged (the cartesian product of ``params`` and the command line's sweeps, the same jobs
in the same order, ``max_batch_size``), plus seeds chosen by the data: with ``hydra.sweeper.seeds=auto`` it runs
the grid on a few seeds and adds seeds only to the comparisons still open (:mod:`.adaptive`):

    python src/train.py -m sign=approx,ste hydra.sweeper.seeds=auto       # sign=ste vs sign=approx, 3 to 10 seeds
"""

# no `from __future__ import annotations`: Hydra executes plugin modules before sys.modules has them, and
# OmegaConf reads the dataclass annotations as types
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins import basic_sweeper
from hydra.core.config_store import ConfigStore

from hydra_plugins.onebit_sweeper import adaptive


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
        if self.sequential is None:
            return super().sweep(arguments)
        return adaptive.run(self, arguments, adaptive.grid_plan)
