"""Configuration checks: every bad option or value stops the job before any training, with one line that names the
value and the valid choices.

- :func:`preflight` checks ``group=option`` command-line overrides against the option files in ``conf/`` before
  Hydra composes anything (Hydra's own message spans many lines).
- :func:`check` validates the composed config's values.
"""

from __future__ import annotations

import math
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


_OVERRIDE = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w/.]*)=(?P<value>.*)$")


def _keys(path: Path) -> set[str]:
    return {k for k in (OmegaConf.load(path) or {}).keys() if k != "defaults"}


def preflight(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Check the overrides in ``argv`` before Hydra composes anything: ``group=option[,option...]`` must name
    existing options, and ``key=value`` / ``group.key=value`` existing keys (``+key=value`` adds a key and is
    left to Hydra). Raises ConfigError with one line naming the bad value and the valid choices."""
    top = _keys(conf_dir / "train.yaml") | set(GROUPS) | {"hydra"}
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if m and not m["prefix"] and m["key"] not in GROUPS:
            head, _, rest = m["key"].partition(".")
            if head not in top:
                raise ConfigError(f"unknown key {m['key']!r}; valid top-level keys: {', '.join(sorted(top))} "
                                  "(use +key=value to add a new one)")
            if rest and head in GROUPS and head not in ("launcher", "experiment", "sweeps"):
                files = list((conf_dir / head).glob("*.yaml"))
                valid = set().union(*(_keys(f) for f in files)) - {"_target_", "_partial_"}
                if rest.split(".")[0] not in valid | {"_target_"}:
                    raise ConfigError(f"unknown key {m['key']!r}; valid keys of {head}: {', '.join(sorted(valid))}")
        if m and m["key"] == "output_root":
            check_writable(m["value"])
        if not m or m["key"] not in GROUPS or m["prefix"].startswith("~"):
            continue
        value = m["value"]
        if any(c in value for c in "()[]{}*$"):  # sweep functions, globs, interpolations: leave them to Hydra
            continue
        valid = options(m["key"], conf_dir)
        for choice in (v.strip() for v in value.split(",")):
            if m["key"] in ("experiment", "sweeps") and choice in ("", "null"):
                continue
            if choice not in valid:
                raise ConfigError(f"unknown option {m['key']}={choice!r}; valid choices: {', '.join(valid)}")


def check_writable(path: str) -> None:
    """``output_root`` must be a directory we can create and write into."""
    import tempfile

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".onebit-write-test"):
            pass
    except OSError as e:
        raise ConfigError(f"output_root={path!r} is not writable ({type(e).__name__}: {e.strerror or e}); "
                          f"choose another directory (or set ONEBIT_OUTPUTS)") from None


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
    _nonneg_float("label_smoothing", cfg.label_smoothing)
    if cfg.label_smoothing >= 1:
        raise ConfigError(f"label_smoothing={cfg.label_smoothing!r} is invalid: must be in [0, 1)")
    if cfg.logger.name not in ("wandb", "csv", "none"):
        raise ConfigError(f"logger.name={cfg.logger.name!r} is invalid: choose one of wandb, csv, none")
    if cfg.logger.name == "wandb" and cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode={cfg.logger.mode!r} is invalid: choose one of offline, online, disabled")
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


def _choice_name(cfg: DictConfig, group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group))
    except Exception:  # not under Hydra
        return "<set>"


def _model_name(cfg: DictConfig) -> str:
    name = _choice_name(cfg, "model")
    return name if name != "<set>" else f"depth-{cfg.model.get('depth')} {cfg.model._target_}"
