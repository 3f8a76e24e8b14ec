"""The papers' own numbers (copied from shared/reference), loaded as pandas DataFrames."""

from __future__ import annotations

from importlib import resources

import pandas as pd

TABLES = {
    "bireal_table1": "bireal_eccv2018_table1.csv",
    "bireal_table2": "bireal_eccv2018_table2.csv",
    "bireal_table3": "bireal_eccv2018_table3.csv",
    "bethge2018_resnete18": "bethge2018_resnete18_ablation.csv",
}


def load(name: str) -> pd.DataFrame:
    """One of the papers' tables by name (see ``TABLES``)."""
    if name not in TABLES:
        raise ValueError(f"paper table {name!r} is unknown: choose one of {', '.join(TABLES)}")
    with resources.files(__package__).joinpath(TABLES[name]).open() as f:
        return pd.read_csv(f)
