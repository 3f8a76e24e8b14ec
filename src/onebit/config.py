"""Configuration checks: every bad option or value stops the job before any training, with one line that names the
value and the valid choices.

- :func:`preflight` checks the command line (parsed with Hydra's own override parser) against the option files in
  ``conf/`` before Hydra composes anything (Hydra's own message spans many lines): options, keys of the option
  actually chosen, Lightning Trainer arguments, the output root. Valid Hydra and Lightning syntax is never refused.
- :func:`check` validates the composed config's values; :func:`check_training` builds the optimizer, the schedule
  and the Trainer once, so that what they refuse stops the job before any record, with its real cause.
- :func:`cause_line` / :func:`error_line`: the one line shown for any exception, with its real cause.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"
GROUPS = ("data", "model", "sign", "weight", "pretrain", "optimizer", "scheduler", "trainer", "logger", "launcher",
          "experiment", "sweeps")
# the options recorded for every run (the axes of the papers' tables)
OPTION_GROUPS = ("data", "model", "sign", "weight", "pretrain", "optimizer", "scheduler", "trainer", "experiment")
REAL_MODELS = ("onebit.models.TorchvisionResNet",)


class ConfigError(ValueError):
    """An invalid option or value; its message is the one line shown to the user."""


def register_resolvers() -> None:
    """``${onebit_uid:}``: a random 6-hex suffix, resolved once per config, for collision-free output dirs."""
    if not OmegaConf.has_resolver("onebit_uid"):
        OmegaConf.register_new_resolver("onebit_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("onebit_root"):
        OmegaConf.register_new_resolver("onebit_root", lambda: str(ROOT))


def options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    folder = SWEEPS_DIR if group == "sweeps" else conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def _defaults(conf: dict) -> list:
    return [d for d in conf.get("defaults") or [] if d != "_self_"]


def option_keys(group: str, option: str, conf_dir: Path = CONF_DIR) -> set[str] | None:
    """The keys of ``conf/<group>/<option>.yaml``, with those of the same-group options it extends through its
    defaults list (``plain18`` extends ``bireal18``); None for a missing option or a defaults list preflight
    cannot follow."""
    path = conf_dir / group / f"{option}.yaml"
    if not path.is_file():
        return None
    conf = _load(path)
    keys = {k for k in conf if k != "defaults"}
    for d in _defaults(conf):
        parent = option_keys(group, d, conf_dir) if isinstance(d, str) else None
        if parent is None:
            return None
        keys |= parent
    return keys


def _choice_values(o) -> list | None:
    """The option name(s) a group override selects (a comma sweep gives several); None for a sweep function."""
    from hydra.core.override_parser.types import ValueType

    if o.value_type == ValueType.ELEMENT:
        return [o.value()]
    if o.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
        return list(o.value().list)
    return None


_UNSURE = object()


def _overlay_choice(overlay: dict, group: str):
    """The option an overlay file's ``override /<group>: <option>`` picks; None if it leaves the group alone,
    _UNSURE if it sweeps the group or has a defaults entry preflight cannot read."""
    if group in (((overlay.get("hydra") or {}).get("sweeper") or {}).get("params") or {}):
        return _UNSURE
    choice = None
    for d in _defaults(overlay):
        if not isinstance(d, dict) or len(d) != 1:
            return _UNSURE
        (k, v), = d.items()
        if k.replace("override ", "").strip().strip("/") == group:
            choice = v
    return choice


class _Choices:
    """Which option of each group the job(s) of a command line use: the command line's ``group=option``, else
    the ``experiment=`` / ``sweeps=`` overlay's ``override /group: option``, else conf/train.yaml's default.
    ``of(group)`` is None where preflight cannot know for sure (a sweep function, an overlay that sweeps the
    group, a defaults list it cannot read): the composed config is then left to Hydra."""

    def __init__(self, overrides: list, conf_dir: Path):
        self.conf_dir = conf_dir
        self.given = {o.key_or_group: o for o in overrides if o.key_or_group in GROUPS and o.package is None}
        self.defaults: dict[str, str | None] = {}
        for d in _load(conf_dir / "train.yaml").get("defaults", []):
            if isinstance(d, dict):
                self.defaults.update(d)
        # per overlay group, in the defaults' order (sweeps after experiment): the file of each chosen overlay
        self.overlays: list[list[dict]] | None = []
        for group in ("experiment", "sweeps"):
            names = self._given(group)
            if names is None:
                self.overlays = None
                return
            folder = SWEEPS_DIR if group == "sweeps" else conf_dir / group
            self.overlays.append([_load(folder / f"{n}.yaml") if n and (folder / f"{n}.yaml").is_file() else {}
                                  for n in names])

    def _given(self, group: str) -> list | None:
        o = self.given.get(group)
        if o is None:
            return [self.defaults.get(group)]
        if o.is_delete():
            return [None]
        values = _choice_values(o)
        return None if values is None or not all(v is None or isinstance(v, str) for v in values) else values

    def of(self, group: str) -> list[str] | None:
        if group in self.given:
            values = self._given(group)
            return None if values is None or None in values else values
        if self.overlays is None:
            return None
        possible = {self.defaults.get(group)}
        for files in self.overlays:
            after = set()
            for overlay in files:
                choice = _overlay_choice(overlay, group)
                if choice is _UNSURE:
                    return None
                after |= possible if choice is None else {choice}
            possible = after
        return None if None in possible else sorted(possible)

    def added_keys(self, group: str) -> set[str]:
        """Keys the overlays set under ``group`` (Hydra merges them into the chosen option)."""
        keys = set()
        for overlay in (o for files in self.overlays or [] for o in files):
            node = overlay.get(group)
            keys |= set(node) if isinstance(node, dict) else set()
        return keys


def trainer_arguments() -> list[str]:
    """The arguments of ``pytorch_lightning.Trainer``: any of them is a valid ``trainer.<argument>=value``."""
    import inspect

    import pytorch_lightning as pl

    return [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]


# Trainer arguments onebit sets for every stage (stages.train_stage): a value given for them would be ignored
SET_BY_ONEBIT = {
    "max_epochs": "from epochs= (binary stage) and pretrain.epochs= (pretraining); set those instead",
    "logger": "from the logger option; use logger=wandb, logger=csv or logger=none",
    "callbacks": "(checkpointing, learning-rate monitor)",
    "plugins": "(atomic checkpoint writing)",
    "default_root_dir": "(the run directory); use output_root= to move the outputs",
}


def _did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def preflight(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Check the command line before Hydra composes anything (Hydra's own messages span many lines) and return
    the argv to give Hydra. Raises ConfigError with one line naming the bad value and the valid choices.

    - ``group=option[,option...]`` must name existing options;
    - ``key=value`` / ``group.key=value`` must name existing keys, of the option actually chosen
      (:class:`_Choices`): ``optimizer.momentum`` with ``optimizer=adam`` names ``optimizer=sgd``;
    - ``trainer.<argument>=value`` takes any ``pytorch_lightning.Trainer`` argument: one the trainer option does
      not set is rewritten to ``++trainer.<argument>=value`` (Hydra's add-or-override), so Hydra accepts it;
    - ``output_root`` (or ``ONEBIT_OUTPUTS``) must be writable, checked without creating anything.

    Overrides are parsed with Hydra's own parser (quoting, sweeps, ``+``/``++``/``~``); ``hydra.*``,
    ``hydra/<group>=<option>``, ``+key=value`` (a new key) and package overrides (``group@pkg=...``) are left to
    Hydra. A command line with another primary config (``--config-name``...) is returned unchecked."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, extra = get_args_parser().parse_known_args(list(argv))
    if args.config_name or args.config_path or args.config_dir:
        return list(argv)
    raws = [*args.overrides, *(e for e in extra if not e.startswith("-"))]
    parser, overrides = OverridesParser.create(), []
    for raw in raws:
        try:
            overrides.append(parser.parse_override(raw))
        except HydraException as e:
            raise ConfigError(f"cannot parse the override {raw!r}: {_first_line(e)}") from None
    choices = _Choices(overrides, conf_dir)
    top = set(_load(conf_dir / "train.yaml")) - {"defaults"} | set(GROUPS) | {"hydra"}
    added = {o.key_or_group for o in overrides if o.is_add() or o.is_force_add()}
    rewrite: dict[str, str] = {}
    output_root = None
    for o in overrides:
        key = o.key_or_group
        if o.package is not None or key == "hydra" or key.startswith(("hydra/", "hydra.")):
            continue
        if key in GROUPS:
            _check_options(o, conf_dir)
            continue
        if key == "output_root" and not o.is_delete():
            output_root = o
        head, _, rest = key.partition(".")
        sub = rest.split(".")[0]
        if head == "trainer" and sub in SET_BY_ONEBIT and not o.is_delete():
            raise ConfigError(f"trainer.{sub} is set by onebit for each stage {SET_BY_ONEBIT[sub]}")
        if o.is_delete() or o.is_add() or o.is_force_add() or key in added:
            continue
        if head not in top:
            raise ConfigError(f"unknown key {key!r}; valid top-level keys: {', '.join(sorted(top))} "
                              f"(use +{key}=value to add a new one{_did_you_mean(head, top)})")
        if not rest or head not in GROUPS or head in ("launcher", "experiment", "sweeps") or re.fullmatch(r"_\w+_", sub):
            continue
        if head == "trainer":
            if _missing_from_chosen(head, sub, choices, conf_dir):
                lightning = trainer_arguments()
                if sub not in lightning:
                    raise ConfigError(f"unknown key {key!r}; valid trainer keys: the pytorch_lightning.Trainer "
                                      f"arguments {', '.join(lightning)}{_did_you_mean(sub, lightning)}")
                rewrite[o.input_line] = "++" + o.input_line
            continue
        missing = _missing_from_chosen(head, sub, choices, conf_dir)
        if missing:
            raise ConfigError(_unknown_key_line(key, head, sub, missing, choices, conf_dir))
    _check_output_root(output_root)
    return [rewrite.get(a, a) for a in argv]


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def _check_options(o, conf_dir: Path) -> None:
    """``group=option[,option...]`` must name files of conf/<group>/ (sweep functions are left to Hydra)."""
    if o.is_delete():
        return
    values = _choice_values(o)
    group = o.key_or_group
    valid = options(group, conf_dir)
    for choice in values or []:
        if group in ("experiment", "sweeps") and choice in ("", None, "null"):
            continue
        if not isinstance(choice, str) or "${" in choice:
            continue
        if choice not in valid:
            raise ConfigError(f"unknown option {group}={choice!r}; valid choices: {', '.join(valid)}")


def _missing_from_chosen(group: str, sub: str, choices: _Choices, conf_dir: Path) -> list[str]:
    """The chosen options of ``group`` that lack the key ``sub`` (none when preflight cannot know the choice
    for sure and some option of the group has the key)."""
    added = choices.added_keys(group)
    chosen = choices.of(group)
    if chosen is None:  # unknown choice: refuse only a key that no option of the group has
        known = [option_keys(group, o, conf_dir) for o in options(group, conf_dir)]
        if any(k is None for k in known) or sub in set().union(*known) | added:
            return []
        return options(group, conf_dir)
    missing = []
    for option in chosen:
        keys = option_keys(group, option, conf_dir)
        if keys is None:
            return []
        if sub not in keys | added:
            missing.append(option)
    return missing


def _unknown_key_line(key: str, group: str, sub: str, missing: list[str], choices: _Choices,
                      conf_dir: Path) -> str:
    others = [o for o in options(group, conf_dir) if o not in missing and sub in (option_keys(group, o, conf_dir)
                                                                                   or ())]
    chosen = missing[0]
    keys = sorted((option_keys(group, chosen, conf_dir) or set()) - {"_target_", "_partial_"})
    where = " ".join(f"{group}={o}" for o in missing)
    if others:
        owners = ", ".join(f"{group}={o}" for o in others[:3]) + (f" (and {len(others) - 3} more)"
                                                                   if len(others) > 3 else "")
        return (f"{key} is a key of {owners}, not of {where}; choose {group}={others[0]}, or set a key of "
                f"{group}={chosen}: {', '.join(keys)}")
    return (f"unknown key {key!r}; valid keys of {group}: {', '.join(keys)} ({group}={chosen}"
            f"{_did_you_mean(sub, keys)})")


def _check_output_root(o) -> None:
    """The output root from the command line, else ``ONEBIT_OUTPUTS``, else conf/train.yaml's default."""
    if o is not None:
        value = o.value()
        if isinstance(value, str) and "${" not in value:
            check_writable(value)
        return
    env = os.environ.get("ONEBIT_OUTPUTS")
    if env:
        check_writable(env, "ONEBIT_OUTPUTS")


def check_writable(path: str, name: str = "output_root") -> None:
    """``path`` must be a directory we can write into, or one we can create: its nearest existing ancestor must
    be a writable directory. Checked with ``os.access``; nothing is created."""
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"no permission to write in {existing}"
    else:
        return
    hint = "set ONEBIT_OUTPUTS to another directory, or pass output_root=" if name == "ONEBIT_OUTPUTS" else \
        "choose another directory (or set ONEBIT_OUTPUTS)"
    raise ConfigError(f"{name}={path!r} is not writable ({reason}); {hint}")


def is_real_model(cfg: DictConfig) -> bool:
    return cfg.model.get("_target_") in REAL_MODELS


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r} is invalid: must be a positive integer")


def _nonneg_float(key: str, value, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: must be a {'positive' if positive else 'non-negative'} "
                          "finite number")


def check(cfg: DictConfig, explicit_groups: set[str] = frozenset()) -> None:
    """Validate values of the composed config. ``explicit_groups``: groups the user chose on the command line."""
    _positive_int("epochs", cfg.epochs)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is invalid: must be a non-negative integer")
    if not isinstance(cfg.shortcut, bool):
        raise ConfigError(f"shortcut={cfg.shortcut!r} is invalid: choose one of true, false")
    if not isinstance(cfg.bn_retrain, bool):
        raise ConfigError(f"bn_retrain={cfg.bn_retrain!r} is invalid: choose one of true, false")
    if not isinstance(cfg.study, str) or not re.fullmatch(r"[\w.-]+", cfg.study):
        raise ConfigError(f"study={cfg.study!r} is invalid: use letters, digits, '_', '-', '.'")
    if cfg.get("threads") is not None:
        _positive_int("threads", cfg.threads)
    if not isinstance(cfg.get("resume", True), bool):
        raise ConfigError(f"resume={cfg.resume!r} is invalid: choose one of true, false")
    opt = cfg.optimizer
    _nonneg_float("optimizer.lr", opt.lr, positive=True)
    for key in ("weight_decay", "binary_weight_decay", "bn_weight_decay"):
        _nonneg_float(f"optimizer.{key}", opt[key])
    if opt.latent_weight_clip is not None:
        _nonneg_float("optimizer.latent_weight_clip", opt.latent_weight_clip, positive=True)
    _check_lists(cfg)
    _nonneg_float("label_smoothing", cfg.label_smoothing)
    if cfg.label_smoothing >= 1:
        raise ConfigError(f"label_smoothing={cfg.label_smoothing!r} is invalid: must be in [0, 1)")
    if cfg.logger.name not in ("wandb", "csv", "none"):
        raise ConfigError(f"logger.name={cfg.logger.name!r} is invalid: choose one of wandb, csv, none")
    if cfg.logger.name == "wandb" and cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode={cfg.logger.mode!r} is invalid: choose one of offline, online, disabled")
    _check_shortcut(cfg, explicit_groups)
    if is_real_model(cfg):
        chosen = sorted(explicit_groups & {"sign", "weight", "pretrain"})
        if chosen:
            raise ConfigError(
                f"{chosen[0]}={_choice_name(cfg, chosen[0])} does not apply to model={_model_name(cfg)}, a real-valued "
                f"model; drop the {'/'.join(chosen)} option or choose a binary model: "
                + ", ".join(o for o in options('model') if not o.startswith('resnet')))
        if cfg.bn_retrain:
            raise ConfigError(f"bn_retrain=true does not apply to model={_model_name(cfg)}, a real-valued model")
    elif cfg.pretrain.name != "none":
        _positive_int("pretrain.epochs", cfg.pretrain.epochs)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_lists(cfg: DictConfig) -> None:
    """List values: Adam's ``betas`` (two numbers in [0, 1)) and the step schedule's ``milestones`` (numbers)."""
    betas = cfg.optimizer.get("betas")
    if "betas" in cfg.optimizer:
        value = OmegaConf.to_object(betas) if OmegaConf.is_config(betas) else betas
        if not (isinstance(value, list) and len(value) == 2 and all(_number(b) and 0 <= b < 1 for b in value)):
            raise ConfigError(f"optimizer.betas={value!r} is invalid: {_target_name(cfg.optimizer)} needs two "
                              "numbers in [0, 1), e.g. [0.9, 0.999]")
    if "milestones" in cfg.scheduler:
        m = cfg.scheduler.milestones
        value = OmegaConf.to_object(m) if OmegaConf.is_config(m) else m
        if not (isinstance(value, list) and all(_number(x) and x > 0 for x in value)):
            raise ConfigError(f"scheduler.milestones={value!r} is invalid: the step schedule needs a list of "
                              "positive numbers (epochs, or fractions of the stage if < 1), e.g. [0.5, 0.75]")


def _target_name(node: DictConfig) -> str:
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


def _check_shortcut(cfg: DictConfig, explicit: set[str]) -> None:
    """An explicit ``shortcut=`` must reach the model: refused for a model that pins ``model.shortcut`` to
    another value (``model=plain18 shortcut=true``) or has no ``shortcut`` at all (torchvision's ResNets)."""
    if "shortcut" not in explicit:
        return
    given = str(cfg.shortcut).lower()
    if "shortcut" not in cfg.model:
        raise ConfigError(f"shortcut={given} does not apply to model={_model_name(cfg)} (it has no "
                          "model.shortcut option); drop shortcut")
    if cfg.model._get_node("shortcut")._is_interpolation() or cfg.model.shortcut == cfg.shortcut:
        return
    pinned = str(cfg.model.shortcut).lower()
    name = _model_name(cfg)
    what = "it has no shortcuts" if cfg.model.shortcut is False else f"its model.shortcut is {pinned}"
    parent = _parent_option("model", name)
    use = f"use model={parent} shortcut={given}, or " if parent else ""
    raise ConfigError(f"shortcut={given} contradicts model={name} ({what}); {use}drop shortcut")


def _parent_option(group: str, option: str, conf_dir: Path = CONF_DIR) -> str | None:
    """The same-group option that ``conf/<group>/<option>.yaml`` extends (plain18 -> bireal18), if any."""
    path = conf_dir / group / f"{option}.yaml"
    parents = [d for d in _defaults(_load(path)) if isinstance(d, str)] if path.is_file() else []
    return parents[0] if parents else None


def check_training(cfg: DictConfig) -> None:
    """The optimizer, the schedule and the Lightning Trainer, built once from the config before any record
    exists (cheap: one dummy parameter, a Trainer that never fits), so that a value they refuse stops the job
    with its real cause in one line instead of failing inside training."""
    import torch
    from hydra.utils import instantiate

    from onebit.optim import ROLE_DECAY_KEYS

    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    for key in (*ROLE_DECAY_KEYS.values(), "latent_weight_clip"):
        opt.pop(key, None)
    try:
        optimizer = instantiate(opt)([torch.nn.Parameter(torch.zeros(1))])
    except Exception as e:
        raise ConfigError(f"optimizer={_choice_name(cfg, 'optimizer')} is refused by "
                          f"{opt.get('_target_')}: {cause_line(e)}") from e
    try:
        instantiate(cfg.scheduler)(optimizer, cfg.epochs)
    except Exception as e:
        raise ConfigError(f"scheduler={_choice_name(cfg, 'scheduler')} is refused by "
                          f"{cfg.scheduler.get('_target_')}: {cause_line(e)}") from e
    try:
        instantiate(cfg.trainer, max_epochs=1, logger=False)
    except Exception as e:
        accelerator = cfg.trainer.get("accelerator")
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator!r} needs a GPU, but torch sees none ({cause_line(e)}; "
                f"torch.cuda.is_available() is False, torch {torch.__version__} built for CUDA {torch.version.cuda}"
                f", CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
                "use trainer=cpu") from e
        raise ConfigError(f"trainer={_choice_name(cfg, 'trainer')} is refused by pytorch_lightning.Trainer: "
                          f"{cause_line(e)}") from e


def cause_line(e: BaseException) -> str:
    """``Type: message`` of the real cause of ``e`` in one line: Hydra's InstantiationException is unwrapped to
    the exception of the target, and a DataLoader worker's wrapped exception to its original last line."""
    from hydra.errors import InstantiationException

    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and lines[1].startswith("Original Traceback"):
        return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1])  # torch's ExceptionWrapper: the worker's "Type: message"
    text = lines[0] if lines else ""
    if isinstance(e, ConfigError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def error_line(e: BaseException) -> str:
    """The one line printed for a job's exception: ``onebit: error: ...`` for a refused config (exit 2),
    ``onebit: job failed: <real cause>`` otherwise."""
    if isinstance(e, ConfigError):
        return f"onebit: error: {cause_line(e)}"
    return f"onebit: job failed: {cause_line(e)}"


def _choice_name(cfg: DictConfig, group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group))
    except Exception:  # not under Hydra
        return "<set>"


def _model_name(cfg: DictConfig) -> str:
    name = _choice_name(cfg, "model")
    return name if name != "<set>" else f"depth-{cfg.model.get('depth')} {cfg.model._target_}"
