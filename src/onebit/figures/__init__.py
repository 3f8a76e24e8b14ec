"""Figures drawn from your own runs (and one that needs none), written as PNG files; the entry point is
``onebit.cli.plots`` (``python analysis/plots.py``).

- :mod:`~onebit.figures.common`: what every figure shares (Agg backend, atomic PNG writes, palette, axis labels,
  a value axis around the data, file-name slugs);
- :mod:`~onebit.figures.draw`: the figures of ``onebit.results``' numbers (training curves per cell, the tables'
  cells as bars, the paired differences of each Bi-Real Table 1 conclusion);
- :mod:`~onebit.figures.probe`: figures that probe models (Bi-Real Fig. 3 from onebit's sign components, the
  block inputs to the Sign with vs. without shortcuts, from trained checkpoints or fresh models).

The numbers come from ``onebit.results`` (the same loader, cells and selection as the tables); this package draws.
``onebit.results`` never imports it (import-linter contracts in pyproject.toml)."""
