"""onebit's Hydra sweeper plugin: ``hydra/sweeper=grid`` (:mod:`.grid_sweeper`, the default: Hydra's basic sweeper),
``hydra/sweeper=one_factor`` (:mod:`.one_factor_sweeper`), and on both, ``hydra.sweeper.seeds=auto``: seeds
chosen by the data (:mod:`.adaptive`).

Hydra discovers plugins only in the ``hydra_plugins`` namespace package (``src/hydra_plugins/`` has no
``__init__.py``, so it joins the one that the installed Hydra launchers share)."""
