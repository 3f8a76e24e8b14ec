"""Hydra resolvers onebit's config uses, registered once before composing."""

from __future__ import annotations

import uuid

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from onebit.cli import usage
from onebit.core.paths import ROOT, absolute, output_root
from onebit.core.registry import GROUPS


def register_resolvers() -> None:
    """``${onebit_uid:}``: a random 6-hex suffix, resolved once per config, for collision-free output dirs;
    ``${onebit_outputs:}``: the default output root, absolute (``onebit.core.paths``); ``${onebit_root:}``: the
    repository; ``${onebit_help:part}``: the generated parts of ``--help``
    (conf/hydra/help/onebit.yaml, ``onebit.cli.usage``); ``${onebit_axis:table,option}``: one axis of a
    registered paper table as a sweep value, ``${onebit_design:table,base|factors,key}``: a value of its one-factor
    design (``onebit.results.registry``); ``${onebit_choices:}``: the option chosen in each of onebit's groups
    (``onebit.core.registry.GROUPS``), by name, as Hydra composed it: the config's ``choices`` node, so a job reads
    its option names from its config, not from Hydra's global state; ``${onebit_teacher_key:path}``: the identity
    of a ``distill=teacher`` teacher, its weights' checksum (``onebit.training.teacher.teacher_key``)."""
    if not OmegaConf.has_resolver("onebit_uid"):
        OmegaConf.register_new_resolver("onebit_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("onebit_outputs"):  # the default output root, read as every entry point reads it,
        # absolute: under the directory the command was started in, also inside a job Hydra moved (hydra.job.chdir)
        OmegaConf.register_new_resolver("onebit_outputs", lambda: absolute(output_root()))
    if not OmegaConf.has_resolver("onebit_root"):
        OmegaConf.register_new_resolver("onebit_root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("onebit_axis"):  # a sweep's grid from the paper table's registered axes
        OmegaConf.register_new_resolver("onebit_axis", _axis)
    if not OmegaConf.has_resolver("onebit_design"):  # a one-factor sweep's base and factors from the table's design
        OmegaConf.register_new_resolver("onebit_design", _design)
    if not OmegaConf.has_resolver("onebit_choices"):  # the option names of the composed config (conf/train.yaml)
        OmegaConf.register_new_resolver("onebit_choices", _choices)
    if not OmegaConf.has_resolver("onebit_teacher_key"):  # conf/distill/teacher.yaml: the teacher by its weights
        OmegaConf.register_new_resolver("onebit_teacher_key", _teacher_key)
    if not OmegaConf.has_resolver("onebit_help"):
        OmegaConf.register_new_resolver("onebit_help", lambda part, *, _root_: usage.text(part, _root_))


def _axis(table: str, option: str) -> str:
    from onebit.results.registry import paper_table  # pandas and the tables load only when a sweep asks

    return paper_table(table).axis(option)


def _design(table: str, part: str, key: str):
    from onebit.results.registry import paper_table  # pandas and the tables load only when a sweep asks

    return paper_table(table).design_value(part, key)


def _teacher_key(path):
    from onebit.training.teacher import teacher_key  # torch loads only when a config names a teacher

    return teacher_key(path)


def _choices() -> DictConfig:
    """Hydra's choice of each onebit group (``hydra.runtime.choices``); empty outside a Hydra run. A config node
    (not a dict), so that ``OmegaConf.resolve`` (``--cfg job --resolve``) can put it in place."""
    try:
        chosen = HydraConfig.get().runtime.choices
    except ValueError:  # composed without Hydra's runtime (no job): nothing chosen by name
        return OmegaConf.create({})
    return OmegaConf.create({group: chosen.get(group) for group in GROUPS if group in chosen})
