"""The facts that the command line, the checks, the record, the loggers, the tables and the plots all read,
each written once here.

- **Option groups** (:data:`GROUPS`): every config group (a folder of ``conf/``; ``sweeps/`` for ``sweeps``),
  its one-line description (``--help``), and its role: whether the chosen option is recorded as a table axis
  (``recorded``), applies only to binary models (``binary_only``: refused for, and recorded as ``None`` on, a
  real-valued model), overlays other groups' values (``overlay``: ``experiment=``, ``sweeps=``...; a global
  package), becomes a W&B tag (``tag``), or cannot change a result (``not_in_identity``, with the reason: left
  out of a job's identity, ``onebit.records.identity``). The options of a group are its YAML files (:func:`options`).
- **Stage names** (:data:`PRETRAIN`, :data:`BINARY`, ...) and the model kinds a stage trains (:data:`MODEL_KINDS`).
- **Metric names** (:data:`TEST_TOP1` ...; :data:`METRICS`, the accuracies tables and figures show in percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from onebit.core.paths import CONF_DIR, SWEEPS_DIR


@dataclass(frozen=True)
class Group:
    """One config group and its role (see the module docstring)."""

    description: str
    recorded: bool = False
    binary_only: bool = False
    overlay: bool = False
    tag: bool = False
    global_package: bool = False  # its files are ``# @package _global_`` (every overlay is)
    not_in_identity: str | None = None  # why its choice cannot change a result (then it is not in a job's identity)

    def __post_init__(self):
        if self.overlay:
            object.__setattr__(self, "global_package", True)


GROUPS: dict[str, Group] = {
    "data": Group("the data set (digits is built in and offline; the others read data.root)", recorded=True, tag=True),
    "model": Group("the network: Bi-Real / Res / Plain ResNets, BinaryDenseNet, FTBNN, or a real-valued torchvision "
                   "ResNet", recorded=True, tag=True),
    "sign": Group("the activation binarizer: forward sign(x), and the backward approximation that names it",
                  recorded=True, binary_only=True, tag=True),
    "weight": Group("the weight binarizer and its scaling (plain sign, XNOR, Bi-Real's magnitude-aware)",
                    recorded=True, binary_only=True, tag=True),
    "pretrain": Group("the activation of the real-valued twin pretrained first and handed to the binary net, or none",
                      recorded=True, binary_only=True, tag=True),
    "recipe": Group("the binary steps between pretraining and bn_retrain: one_step, or two_step (activations first, "
                    "distilled from the twin as ReActNet runs it; two_step_no_distill without the teacher)",
                    recorded=True, binary_only=True, tag=True),
    "distill": Group("the teacher of the binary steps: none, the run's own pretrained twin, or a finished real-valued "
                     "run (distill.teacher=<run dir or .ckpt>); ReActNet's distributional loss",
                     recorded=True, binary_only=True, tag=True),
    "protocol": Group("a paper's optimizer, schedule and loss, over the chosen model and data (Bi-Real Table 1)",
                      recorded=True, overlay=True, tag=True),
    "optimizer": Group("the optimizer, with weight decay per parameter role", recorded=True),
    "scheduler": Group("the learning-rate schedule of each stage", recorded=True),
    "trainer": Group("the Lightning Trainer; any Trainer argument is accepted as trainer.<argument>=value",
                     recorded=True),
    "callbacks": Group("your own Lightning callbacks beside onebit's: early_stopping, rich_progress, or any class "
                       "with +callbacks.<name>._target_=<class>"),
    "logger": Group("where metrics go besides the local record: W&B (offline by default), CSV, or none",
                    not_in_identity="where metrics are sent (W&B, CSV, none), not what is computed"),
    "launcher": Group("how a multirun (-m) starts its jobs: in turn, in parallel (joblib), or through submitit / SLURM",
                      global_package=True, not_in_identity="how jobs are started (basic, joblib, submitit); the "
                      "launcher's settings live under hydra"),
    "experiment": Group("a paper's whole recipe (model, data, optimizer, schedule, epochs)", recorded=True,
                        overlay=True, tag=True),
    "sweeps": Group("the axes of one paper table, run with -m: python src/train.py -m sweeps=<name>", overlay=True),
    "hparams_search": Group("an Optuna search over hyperparameters, run with -m (pip install -e '.[optuna]')",
                            overlay=True),
    "debug": Group("short smoke runs that check the code runs; marked as smoke and never counted in tables",
                   overlay=True),
}
# the options recorded for every run (the axes of the papers' tables)
OPTION_GROUPS = tuple(g for g, spec in GROUPS.items() if spec.recorded)
# groups that do not apply to a real-valued model (refused when chosen, recorded as None)
BINARY_ONLY = tuple(g for g, spec in GROUPS.items() if spec.binary_only)
# the options that become W&B tags ``<option>=<value>`` when set (with two derived ablation keys)
TAG_OPTIONS = (*(g for g, spec in GROUPS.items() if spec.tag), "shortcut", "sign_t")
# the model classes that are real-valued (one stage, ``real``; no sign / weight / pretrain / recipe)
REAL_MODELS = ("onebit.nn.models.TorchvisionResNet",)


def options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group: its YAML files (``sweeps`` lives in ``sweeps/``, next to ``conf/``)."""
    folder = SWEEPS_DIR if group == "sweeps" else conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def parent_option(group: str, option: str, conf_dir: Path = CONF_DIR) -> str | None:
    """The same-group option that ``conf/<group>/<option>.yaml`` extends (plain18 -> bireal18), if any: the
    first plain entry of its defaults list."""
    path = conf_dir / group / f"{option}.yaml"
    if not path.is_file():
        return None
    defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
    parents = [d for d in defaults if isinstance(d, str) and d != "_self_"]
    return parents[0] if parents else None


def study_overlays(conf_dir: Path = CONF_DIR) -> tuple[str, ...]:
    """The overlay groups of :data:`GROUPS` whose options name their own study (a top-level ``study:`` in one of
    its YAML files: ``debug``, ``experiment``, ``sweeps``, ``hparams_search``): a multirun that chooses one keeps
    that study instead of being named by its swept keys (``hydra_plugins.onebit_sweeper.grid_sweeper.own_study``).
    Read from the files, so a new overlay with a study is never missed."""
    def names_study(group: str) -> bool:
        folder = SWEEPS_DIR if group == "sweeps" else conf_dir / group
        return any("study" in (OmegaConf.load(p) or {}) for p in folder.glob("*.yaml"))

    return tuple(g for g, spec in GROUPS.items() if spec.overlay and names_study(g))


# ----------------------------------------------------------------------------------------------------------
# Stages: the names a recipe's stages have (records, checkpoints, W&B job_type) and the models they train
# ----------------------------------------------------------------------------------------------------------

PRETRAIN, BINARY, BINARY_ACTIVATIONS = "pretrain", "binary", "binary_activations"
BN_RETRAIN, REAL = "bn_retrain", "real"
# kind -> (activation component, weight component), as config paths (None: a real-valued component)
MODEL_KINDS = {
    "twin": ("pretrain.activation", None),  # Bi-Real 4.1: the real-valued net that initialises the binary one
    "binary_activations": ("sign", None),   # binary activations, real weights (step 1 of the two-step scheme)
    "binary": ("sign", "weight"),           # binary activations and weights
    "real": (None, None),                   # a real-valued model (torchvision's ResNets)
}

# ----------------------------------------------------------------------------------------------------------
# Metrics: the names a stage logs and records
# ----------------------------------------------------------------------------------------------------------

TEST_TOP1, TEST_TOP5 = "test/top1", "test/top5"
VAL_TOP1, VAL_TOP5, VAL_LOSS, VAL_TOP1_BEST = "val/top1", "val/top5", "val/loss", "val/top1_best"
TRAIN_TOP1, TRAIN_LOSS = "train/top1", "train/loss"
# the metric tables report by default: top-1 of the final weights on the held-out test split
DEFAULT_METRIC = TEST_TOP1
# the accuracies: a cell, a table and a figure show them in percent (x 100), every other metric as recorded
METRICS = (TEST_TOP1, TEST_TOP5, VAL_TOP1, VAL_TOP1_BEST, VAL_TOP5, TRAIN_TOP1)


def is_real_model(cfg) -> bool:
    """Whether a config's model is real-valued (:data:`REAL_MODELS`): one ``real`` stage, no binary-only group."""
    return cfg.model.get("_target_") in REAL_MODELS


def chosen(cfg, group: str) -> str | None:
    """The name of the option a composed config chose in ``group`` (its ``choices`` node, conf/train.yaml); None
    when it has none (a config composed without Hydra's runtime, or a record from before the node)."""
    return (cfg.get("choices") or {}).get(group)
