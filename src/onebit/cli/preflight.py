"""The command line before Hydra composes anything: every ``group=option`` names an existing option, every
``group.key=value`` a key of the option actually chosen (or one line saying which option has it), Lightning Trainer
arguments the config lacks become ``++trainer.X=v``, and the output root must be writable (checked without creating
anything). Overrides are parsed with Hydra's own parser; valid Hydra and Lightning syntax is never refused.

:func:`preflight` returns the argv that ``src/train.py`` hands to Hydra.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from onebit.core.errors import ConfigError
from onebit.core.paths import CONF_DIR, SWEEPS_DIR
from onebit.core.registry import GLOBAL_GROUPS, GROUPS, OVERLAYS, options

# Hydra's flags that show something instead of running a job: no output is written, so output_root is not checked
NO_RUN_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion")
# options of Hydra's groups that an optional plugin provides: (group, option) -> (its module, how to install it)
OPTIONAL_PLUGINS = {("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper",
                                                  "hydra-optuna-sweeper: pip install -e '.[optuna]'")}


def _load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def _defaults(conf: dict) -> list:
    return [d for d in conf.get("defaults") or [] if d != "_self_"]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_overlay(folder: Path, name: str, seen: tuple = ()) -> dict:
    """An overlay file as Hydra composes it with the same-group files it extends (``- default`` in its defaults
    list): their defaults entries first, then its own; their keys, then its own over them. {} if missing."""
    path = folder / f"{name}.yaml"
    if not name or not path.is_file() or name in seen:
        return {}
    conf, merged, entries = _load(path), {}, []
    for d in _defaults(conf):
        if isinstance(d, str):
            parent = _load_overlay(folder, d.removesuffix(".yaml"), (*seen, name))
            entries += parent.pop("defaults", [])
            merged = _merge(merged, parent)
        else:
            entries.append(d)
    return {**_merge(merged, {k: v for k, v in conf.items() if k != "defaults"}), "defaults": entries}


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
    from hydra.core.override_parser.types import QuotedString, ValueType

    if o.value_type == ValueType.ELEMENT:
        return [o.value()]
    if o.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):   # 'quoted' elements as text
        return [v.text if isinstance(v, QuotedString) else v for v in o.value().list]
    return None


_UNSURE = object()


def _overlay_choice(overlay: dict, group: str):
    """The option an overlay file's ``override /<group>: <option>`` picks; None if it leaves the group alone,
    _UNSURE if it sweeps the group or has a defaults entry preflight cannot read."""
    sweeper = (overlay.get("hydra") or {}).get("sweeper") or {}
    if any(group in (sweeper.get(k) or {}) for k in ("params", "base", "factors")):  # grid or one_factor sweeper
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
    the overlays' (:data:`OVERLAYS`: ``experiment=``, ``sweeps=``, ``debug=``...) ``override /group: option`` (a
    later overlay wins), else conf/train.yaml's default.
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
        self.overlays: list[list[dict]] | None = None
        files: dict[str, list[dict]] = {}
        for group in OVERLAYS:
            names = self._given(group)
            if names is None:
                return
            files[group] = self._files(group, names)
        # an overlay may choose another overlay group's option (sweeps=bireal_table1: override /protocol: paper_sgd);
        # the command line wins over it, as in Hydra
        for group in (g for g in OVERLAYS if g not in self.given):
            start = {self.defaults.get(group)}
            possible = self._fold(group, start, [files[g] for g in OVERLAYS if g != group])
            if possible is None:
                return
            if possible != start:
                files[group] = self._files(group, sorted(possible, key=str))
        self.overlays = [files[g] for g in OVERLAYS]

    def _files(self, group: str, names: list) -> list[dict]:
        folder = SWEEPS_DIR if group == "sweeps" else self.conf_dir / group
        return [_load_overlay(folder, n) if isinstance(n, str) else {} for n in names]

    @staticmethod
    def _fold(group: str, possible: set, overlays: list[list[dict]]) -> set | None:
        """The options of ``group`` after the overlays (in order; the files of one group are alternatives of a
        sweep) applied their ``override /group: option``; None if one of them leaves it unsure."""
        for files in overlays:
            after = set()
            for overlay in files:
                choice = _overlay_choice(overlay, group)
                if choice is _UNSURE:
                    return None
                after |= possible if choice is None else {choice}
            possible = after
        return possible

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
        possible = self._fold(group, {self.defaults.get(group)}, self.overlays)
        return None if possible is None or None in possible else sorted(possible)

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
    "logger": f"from the logger option; use logger={'|'.join(options('logger'))}",
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
    - ``output_root`` (or ``ONEBIT_OUTPUTS``) must be writable, checked without creating anything, unless a flag of
      :data:`NO_RUN_FLAGS` (``--help``, ``-h``, ``--hydra-help``, ``--cfg``, ``--info``) shows something instead of
      running: those flags pass through to Hydra as given;
    - an option that an optional Hydra plugin provides (``hydra/sweeper=optuna``, also through
      ``hparams_search=...``) needs the plugin installed (:data:`OPTIONAL_PLUGINS`).

    Overrides are parsed with Hydra's own parser (quoting, sweeps, ``+``/``++``/``~``); ``hydra.*``,
    ``hydra/<group>=<option>``, ``+key=value`` (a new key) and package overrides (``group@pkg=...``) are left to
    Hydra. A command line with another primary config (``--config-name``...) is returned unchecked."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, extra = get_args_parser().parse_known_args(list(argv))
    if args.config_name or args.config_path or args.config_dir:
        return list(argv)
    runs = not any(getattr(args, flag, None) for flag in NO_RUN_FLAGS)
    raws = [*args.overrides, *(e for e in extra if not e.startswith("-"))]
    parser, overrides = OverridesParser.create(), []
    for raw in raws:
        try:
            overrides.append(parser.parse_override(raw))
        except HydraException as e:
            raise ConfigError(f"cannot parse the override {raw!r}: {_first_line(e)}") from None
    choices = _Choices(overrides, conf_dir)
    _check_plugins(overrides, choices)
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
        if (not rest or head not in GROUPS or head in GLOBAL_GROUPS
                or re.fullmatch(r"_\w+_", sub)):
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
    if runs:
        _check_output_root(output_root)
    return [rewrite.get(a, a) for a in argv]


def _check_plugins(overrides: list, choices: _Choices) -> None:
    """An option of :data:`OPTIONAL_PLUGINS` chosen on the command line (``hydra/sweeper=optuna``) or by an overlay
    (``hparams_search=bireal_optuna``) needs its plugin installed."""
    import importlib.util

    for (group, option), (module, install) in OPTIONAL_PLUGINS.items():
        given = [o for o in overrides if o.key_or_group == group and o.package is None and not o.is_delete()]
        names = set(_choice_values(given[-1]) or []) if given else \
            {_overlay_choice(f, group) for files in choices.overlays or [] for f in files}
        if option in names and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{group}={option} needs a Hydra plugin that is not installed, {install}")


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def _check_options(o, conf_dir: Path) -> None:
    """``group=option[,option...]`` must name files of conf/<group>/ (sweep functions are left to Hydra)."""
    if o.is_delete():
        return
    group = o.key_or_group
    valid = options(group, conf_dir)
    for choice in _choice_values(o) or []:
        if choice in (None, "", "null"):  # Hydra: a traceback, or "Could not find 'group/'" over many lines
            none = f"; omit it (or ~{group}) to choose none (the default)" if _nullable(group, conf_dir) else ""
            raise ConfigError(f"{group}={'null' if choice is None else repr(choice)} is invalid: a config group takes "
                              f"an option name; valid choices: {', '.join(valid)}{none}")
        if not isinstance(choice, str) or "${" in choice:
            continue
        if choice not in valid:
            raise ConfigError(f"unknown option {group}={choice!r}; valid choices: {', '.join(valid)}")


def _nullable(group: str, conf_dir: Path) -> bool:
    """Whether conf/train.yaml's defaults list chooses no option of ``group`` by default (``experiment: null``)."""
    return any(isinstance(d, dict) and group in d and d[group] is None
               for d in _load(conf_dir / "train.yaml").get("defaults", []))


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
        instead = f"set a key of {group}={chosen}: {', '.join(keys)}" if keys else \
            f"drop {key} ({group}={chosen} has no keys to set)"
        return f"{key} is a key of {owners}, not of {where}; choose {group}={others[0]}, or {instead}"
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
