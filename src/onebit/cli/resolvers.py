"""Hydra resolvers onebit's config uses, registered once before composing."""

from __future__ import annotations

import uuid

from omegaconf import OmegaConf

from onebit.cli import usage
from onebit.core.paths import ROOT


def register_resolvers() -> None:
    """``${onebit_uid:}``: a random 6-hex suffix, resolved once per config, for collision-free output dirs;
    ``${onebit_root:}``: the repository; ``${onebit_help:part}``: the generated parts of ``--help``
    (conf/hydra/help/onebit.yaml, ``onebit.cli.usage``); ``${onebit_axis:table,option}``: one axis of a
    registered paper table as a sweep value, ``${onebit_design:table,base|factors,key}``: a value of its one-factor
    design (``onebit.results.registry``)."""
    if not OmegaConf.has_resolver("onebit_uid"):
        OmegaConf.register_new_resolver("onebit_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("onebit_root"):
        OmegaConf.register_new_resolver("onebit_root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("onebit_axis"):  # a sweep's grid from the paper table's registered axes
        OmegaConf.register_new_resolver("onebit_axis", _axis)
    if not OmegaConf.has_resolver("onebit_design"):  # a one-factor sweep's base and factors from the table's design
        OmegaConf.register_new_resolver("onebit_design", _design)
    if not OmegaConf.has_resolver("onebit_help"):
        OmegaConf.register_new_resolver("onebit_help", lambda part, *, _root_: usage.text(part, _root_))


def _axis(table: str, option: str) -> str:
    from onebit.results.registry import paper_table  # pandas and the tables load only when a sweep asks

    return paper_table(table).axis(option)


def _design(table: str, part: str, key: str):
    from onebit.results.registry import paper_table  # pandas and the tables load only when a sweep asks

    return paper_table(table).design_value(part, key)
