"""onebit's Hydra sweeper plugin: ``hydra/sweeper=one_factor`` (:mod:`.one_factor_sweeper`).

Hydra discovers plugins only in the ``hydra_plugins`` namespace package (``src/hydra_plugins/`` has no
``__init__.py``, so it joins the one that the installed Hydra launchers share)."""
