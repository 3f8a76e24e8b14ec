"""The top layer: the entry points (train, eval, export, tables, plots, sync) and what only the command line needs
(``--help`` text, checks of the command line before Hydra composes, Hydra resolvers)."""
