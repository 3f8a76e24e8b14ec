"""Results: the one path from run records (local ``record.json`` files or W&B runs) to the papers' tables and
the figures' numbers.

- :mod:`~onebit.results.load`: the one validating loader (a damaged record is named on stderr and left out).
- :mod:`~onebit.results.select`: which runs a table shows (per study, smoke runs left out, duplicates of one
  seed dropped), each decision written into the table's notes.
- :mod:`~onebit.results.cells`: a cell is ``onebit.records.identity.cell_key`` (runs identical but for the seed); its
  mean ± std over seeds; table positions that would mix cells are split into one table per combination.
- :mod:`~onebit.results.paired`: paired differences between runs identical except for one option.
- :mod:`~onebit.results.bireal`, :mod:`~onebit.results.bethge`, :mod:`~onebit.results.study`: the tables.
- :mod:`~onebit.results.figures`: the numbers behind ``onebit.figures``' figures (``python analysis/plots.py``).
"""
