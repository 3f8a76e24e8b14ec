"""Any study as a table: one row per cell (``onebit.records.identity.cell_key``), named by the fewest options or config
keys that tell the study's cells apart, with the cell's mean ± std over seeds (n) and its failed / running /
missing counts."""

from __future__ import annotations

import pandas as pd

from onebit.core.registry import DEFAULT_METRIC
from onebit.results.cells import group_cells, label_items, label_keys, summarize
from onebit.results.select import Selection, Table, table_name

TITLE = "{label}: one row per cell ({metric}, %; mean ± std over seeds (n))"


def table(records, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One row per cell: the label keys (:func:`onebit.results.cells.label_keys`; ``model`` when a single cell)
    and the cell's text; rows sorted by their labels."""
    cells = group_cells(records)
    items = {key: label_items(recs) for key, recs in cells.items()}
    keys = label_keys(list(items.values())) or ["model"]
    rows = [{**{k: items[key].get(k) for k in keys}, metric: summarize(recs, metric).text()}
            for key, recs in cells.items()]
    return pd.DataFrame(rows).sort_values(keys, key=lambda s: s.map(str)).reset_index(drop=True)


def tables(sel: Selection, metric: str = DEFAULT_METRIC) -> list[Table]:
    if not sel.records:
        return []
    return [Table(table_name("study", sel, home=()) if sel.study is None else f"study_{sel.study}",
                  TITLE.format(label=sel.label[:1].upper() + sel.label[1:], metric=metric),
                  table(sel.records, metric), list(sel.notes))]
