"""The command line, composed by Hydra before the job starts: Hydra composes, onebit explains.

:func:`preflight` composes conf/train.yaml (or ``--config-name``'s, with ``--config-path`` / ``--config-dir``) with the
command line once, with Hydra's own machinery and the same search path as ``@hydra.main`` (its override parser,
config repository, defaults list, composition and override application; a multirun's sweeps with their first value,
as the sweeper's first job would), and turns what Hydra refuses into one line that names the value and the valid
choices (Hydra's own messages span many lines, or are a traceback):

- ``group=option`` (``hydra/launcher=...`` too): Hydra's ``MissingConfigException`` and its ``options``; every option
  of a sweep (``model=a,b``), an empty or null option and an optional plugin's option are checked against Hydra's
  config repository (``get_group_options``);
- ``key=value``: an unknown key (Hydra's "Could not override", an OmegaConf ConfigKeyError) names the options of its
  group that have the key (composed by Hydra, option alone), or the valid keys, with a did-you-mean;
- the rest of Hydra's refusals (a value of the wrong type, ``~`` of a missing key, a sweep without ``-m``...): their
  lines joined into one.

What Hydra cannot know, onebit adds: Lightning Trainer arguments the trainer option lacks become ``++trainer.X=v``
(Hydra's add-or-override), the Trainer arguments onebit sets for each stage are refused, an optional plugin names its
extra, ``trainer.accelerator`` must name an accelerator Lightning knows, and the output root and the pretrain cache
must be writable (leaving nothing behind).

:func:`preflight` returns the argv that ``src/train.py`` hands to Hydra.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from onebit.cli.resolvers import register_resolvers
from onebit.core.errors import ConfigError
from onebit.core.paths import CACHE_ENV, CONF_DIR, OUTPUTS_ENV, check_writable
from onebit.core.registry import GROUPS, is_real_model, options

# Hydra's flags that show something instead of running a job: no output is written, so output_root is not checked
NO_RUN_FLAGS = ("help", "hydra_help", "cfg", "info")
# options of Hydra's groups that an optional plugin provides: (group, option) -> (its module, how to install it)
OPTIONAL_PLUGINS = {("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper",
                                                  "hydra-optuna-sweeper: pip install -e '.[optuna]'")}


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


def preflight(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Compose the command line with Hydra and return the argv to give Hydra; raises ConfigError with one line
    naming the bad value and the valid choices. ``trainer.<argument>=value`` for a ``pytorch_lightning.Trainer``
    argument the trainer option lacks is rewritten to ``++trainer.<argument>=value``. ``output_root`` (or
    ``ONEBIT_OUTPUTS``) and, for a job that pretrains, ``cache_dir`` (or ``ONEBIT_CACHE``) must be writable unless a
    flag of :data:`NO_RUN_FLAGS` (``--help``, ``--cfg``, ``--info``...) shows something instead of running. Another
    primary config (``--config-name``, ``--config-path``, ``--config-dir``) is composed as Hydra would compose it;
    ``--shell-completion`` is returned unchecked."""
    from hydra._internal.utils import get_args_parser

    args, extra = get_args_parser().parse_known_args(list(argv))
    if args.shell_completion:
        return list(argv)
    register_resolvers()  # conf/train.yaml's search path needs ${onebit_root:}
    overrides = _parse([*args.overrides, *(e for e in extra if not e.startswith("-"))])
    for o in overrides:
        head, _, rest = o.key_or_group.partition(".")
        sub = rest.split(".")[0]
        if head == "trainer" and sub in SET_BY_ONEBIT and not o.is_delete():
            raise ConfigError(f"trainer.{sub} is set by onebit for each stage {SET_BY_ONEBIT[sub]}")
    runs = not any(getattr(args, flag, None) for flag in NO_RUN_FLAGS)
    primary = args.config_name or args.config_path or args.config_dir
    if not overrides and not primary:  # conf/train.yaml as it is (the tests compose it): no compose to pay for
        for env in (OUTPUTS_ENV, CACHE_ENV):
            if runs and os.environ.get(env):
                check_writable(os.environ[env], env)
        return list(argv)
    composition = _Composition(_search_path(conf_dir, args.config_path, args.config_dir), overrides,
                               bool(args.multirun), args.config_name or "train")
    rewrite = composition.apply_overrides()
    _check_accelerators(composition, overrides)
    if runs:
        _check_writable_dirs(composition, overrides)
    return [rewrite.get(a, a) for a in argv]


def _search_path(conf_dir: Path, config_path: str | None, config_dir: str | None):
    """``@hydra.main``'s search path (onebit.cli.train): ``conf_dir``, or ``--config-path`` (absolute, or relative to
    onebit/cli/ as Hydra reads it), plus ``--config-dir`` (``_run_hydra``'s ``add_conf_dir``)."""
    from hydra._internal.utils import compute_search_path_dir, create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    primary = str(conf_dir) if config_path is None else compute_search_path_dir(__file__, None, config_path)
    search = create_config_search_path(primary)
    if config_dir is not None:
        extra = os.path.abspath(config_dir)
        if not os.path.isdir(extra):
            raise ConfigError(f"--config-dir {config_dir!r}: no such directory ({extra})")
        search.prepend(provider="command-line", path=f"file://{extra}", anchor=SearchPathQuery(provider="schema"))
    return search


def _parse(raws: list[str]) -> list:
    """Hydra's override parser, one override at a time so that the line names the one it cannot parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, overrides = OverridesParser.create(), []
    for raw in raws:
        try:
            overrides.append(parser.parse_override(raw))
        except HydraException as e:
            raise ConfigError(f"cannot parse the override {raw!r}: {_first_line(e)}") from None
    return overrides


class _Composition:
    """conf/train.yaml composed by Hydra's ConfigLoaderImpl steps (``_load_configuration_impl``: search path,
    defaults list, composition, struct mode), with the config overrides then applied one at a time by Hydra's
    ``_apply_overrides_to_config``, so that a refused one is known and explained (:meth:`apply_overrides`)."""

    def __init__(self, search_path, overrides: list, multirun: bool, config_name: str = "train"):
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.config_repository import CachingConfigRepository
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.errors import HydraException, MissingConfigException
        from hydra.types import RunMode
        from omegaconf.errors import OmegaConfBaseException

        self.loader = ConfigLoaderImpl(search_path)
        self.repo = CachingConfigRepository(self.loader.repository)
        self.config_name = config_name
        self._alone: dict[tuple, set | None] = {}
        try:
            self.loader._process_config_searchpath(config_name, overrides, self.repo)  # + hydra.searchpath (sweeps/)
            ConfigLoaderImpl.validate_sweep_overrides_legal(overrides, RunMode.MULTIRUN if multirun else RunMode.RUN,
                                                            from_shell=True)
            self.sweeps = {}   # group -> the options a command-line sweep gives it
            for o in overrides:
                if self.repo.group_exists(o.key_or_group) and not o.is_delete():
                    self._check_options(o)
            self.defaults = create_defaults_list(repo=self.repo, config_name=config_name, prepend_hydra=True,
                                                 overrides_list=[f for f in map(self._first, overrides) if f],
                                                 skip_missing=multirun)
            self.cfg = self.loader._compose_config_from_defaults_list(self.defaults.defaults, self.repo)
        except ConfigError:
            raise
        except MissingConfigException as e:
            raise self._missing(e) from None
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            raise ConfigError(_one_line(e)) from None
        OmegaConf.set_struct(self.cfg, True)
        OmegaConf.set_readonly(self.cfg.hydra, False)
        self.choices = self.defaults.overrides.known_choices  # group -> the option chosen (overlays included)

    # ------------------------------------------------------------------------------------------- options
    def _values(self, o) -> list:
        """The option name(s) a group override selects: a sweep (``a,b``, ``choice()``, ``glob()``) gives all."""
        from hydra.core.override_parser.types import Override

        if not o.is_sweep_override():
            return [o.value()]
        if not o.is_discrete_sweep():
            return []
        o.config_loader = self.repo  # glob(): Hydra asks it for the group's options
        return [Override._convert_value(v) for v in o.sweep_iterator()]

    def _first(self, o):
        """A sweep as the first job sees it (its first value; an interval's start); Hydra's defaults list leaves
        sweeps out."""
        from hydra.core.override_parser.types import ValueType

        if not o.is_sweep_override():
            return o
        first = o.value().start if o.is_interval_sweep() else next(iter(self._values(o)), None)
        return None if first is None else dataclasses.replace(o, value_type=ValueType.ELEMENT, _value=first)

    def _check_options(self, o) -> None:
        """Every option a ``group=...`` override names is one Hydra's repository has (all values of a sweep)."""
        group = o.key_or_group
        valid = self.repo.get_group_options(group)
        values = self._values(o)
        if o.is_sweep_override():
            self.sweeps[group] = values
        for value in values:
            if value in (None, "", "null"):  # Hydra: a ValueError, or "Could not find 'group/'" over many lines
                nullable = any(getattr(d, "group", None) == group and d.value is None
                               for d in self.repo.load_config(self.config_name).defaults_list or [])
                none = f"; omit it (or ~{group}) to choose none (the default)" if nullable else ""
                raise ConfigError(f"{group}={'null' if value is None else repr(value)} is invalid: a config group "
                                  f"takes an option name; valid choices: {', '.join(valid)}{none}")
            if isinstance(value, str) and "${" not in value and value not in valid:
                raise _unknown_option(group, value, valid)

    def _missing(self, e) -> ConfigError:
        """Hydra's MissingConfigException (an option chosen by the command line or by an overlay's defaults)."""
        group, _, option = (e.missing_cfg_file or "").rpartition("/")
        if e.options is None or not group:
            return ConfigError(_one_line(e))
        return _unknown_option(group, option, e.options)

    # ------------------------------------------------------------------------------------------ overrides
    def apply_overrides(self) -> dict[str, str]:
        """Apply the config overrides in order, as Hydra does; returns the rewrites ``{input: ++input}`` of the
        Trainer arguments the trainer option lacks. Raises ConfigError for the first one Hydra refuses."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.types import OverrideType
        from hydra.errors import HydraException

        rewrite = {}
        for o in self.defaults.config_overrides:
            try:
                ConfigLoaderImpl._apply_overrides_to_config([o], self.cfg)
                continue
            except HydraException as e:
                if not _unknown_key_error(e):
                    raise ConfigError(f"{o.input_line} is refused: {_one_line(e)}") from None
            head, _, rest = o.key_or_group.partition(".")
            sub = rest.split(".")[0]
            if head == "trainer" and sub and o.type == OverrideType.CHANGE:
                lightning = trainer_arguments()
                if sub not in lightning:
                    raise ConfigError(f"unknown key {o.key_or_group!r}; valid trainer keys: the pytorch_lightning."
                                      f"Trainer arguments {', '.join(lightning)}{_did_you_mean(sub, lightning)}")
                ConfigLoaderImpl._apply_overrides_to_config([dataclasses.replace(o, type=OverrideType.FORCE_ADD)],
                                                            self.cfg)
                rewrite[o.input_line] = "++" + o.input_line
                continue
            raise ConfigError(self._unknown_key(o))
        self._check_swept_keys()
        return rewrite

    def _option_keys(self, group: str, option: str) -> set[str] | None:
        """The keys of one option of a group, composed alone by Hydra (with the same-group options it extends:
        ``plain18`` -> ``bireal18``); None if it does not compose alone."""
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.core.override_parser.types import Override, OverrideType, ValueType
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if (group, option) not in self._alone:
            ours = not group.startswith("hydra/")  # Hydra's groups: chosen in Hydra's own defaults list
            choose = Override(OverrideType.ADD if ours else OverrideType.CHANGE, group, ValueType.ELEMENT, option)
            try:
                d = create_defaults_list(repo=self.repo, config_name=None, overrides_list=[choose],
                                         prepend_hydra=not ours, skip_missing=True)
                cfg = self.loader._compose_config_from_defaults_list(d.defaults, self.repo)
                node = OmegaConf.select(cfg, group.replace("/", "."))
                self._alone[group, option] = set(node) if isinstance(node, DictConfig) else set()
            except (HydraException, OmegaConfBaseException, ValueError):
                self._alone[group, option] = None
        return self._alone[group, option]

    def _unknown_key(self, o) -> str:
        key = o.key_or_group
        if "/" in key.split(".")[0]:  # hydra/foo=bar: not a group, so Hydra took it for a key
            from hydra.core.object_type import ObjectType

            parent = key.rpartition("/")[0]
            groups = [f"{parent}/{g}" for g in self.repo.get_group_options(parent, ObjectType.GROUP)]
            return f"unknown config group {key!r}; valid groups: {', '.join(groups)}{_did_you_mean(key, groups)}"
        parts, node, depth = key.split("."), self.cfg, 0
        while depth < len(parts) - 1 and isinstance(node, DictConfig) and parts[depth] in node:
            node, depth = node._get_node(parts[depth]), depth + 1
        head, sub = parts[0], parts[depth]
        if depth == 0:
            if head in GROUPS:  # an overlay group (a global package): no keys of its own
                return (f"unknown key {key!r}: {head} has no keys of its own; choose {head}=<option>: "
                        f"{', '.join(self.repo.get_group_options(head))}")
            top = sorted(set(self.cfg) | set(GROUPS))
            return (f"unknown key {key!r}; valid top-level keys: {', '.join(top)} (use +{key}=value to add a new "
                    f"one{_did_you_mean(head, top)})")
        keys = sorted(k for k in node if k not in ("_target_", "_partial_")) if isinstance(node, DictConfig) else []
        group = "/".join(parts[:depth])  # the config group whose option is this node: model, hydra/launcher...
        if self.choices.get(group) and (group not in GROUPS or not GROUPS[group].global_package):
            return self._key_of_other_option(key, group, sub, [self.choices[group]], keys)
        where = ".".join(parts[:depth])
        return f"unknown key {key!r}; valid keys of {where}: {', '.join(keys)}{_did_you_mean(sub, keys)}"

    def _key_of_other_option(self, key: str, group: str, sub: str, missing: list[str], keys: list[str]) -> str:
        """``optimizer.momentum`` with ``optimizer=adam``: the options of the group that have the key."""
        others = [o for o in self.repo.get_group_options(group)
                  if o not in missing and sub in (self._option_keys(group, o) or ())]
        chosen, where = missing[0], " ".join(f"{group}={o}" for o in missing)
        if not others:
            return (f"unknown key {key!r}; valid keys of {group}: {', '.join(keys)} ({group}={chosen}"
                    f"{_did_you_mean(sub, keys)})")
        owners = ", ".join(f"{group}={o}" for o in others[:3]) + (f" (and {len(others) - 3} more)"
                                                                   if len(others) > 3 else "")
        instead = f"set a key of {group}={chosen}: {', '.join(keys)}" if keys else \
            f"drop {key} ({group}={chosen} has no keys to set)"
        return f"{key} is a key of {owners}, not of {where}; choose {group}={others[0]}, or {instead}"

    def _check_swept_keys(self) -> None:
        """``-m optimizer=sgd,adam optimizer.momentum=0.9``: the first option composed; the key must also be one
        of every other option of the sweep (or one an overlay or an earlier override added to the group)."""
        for o in self.defaults.config_overrides:
            head, _, rest = o.key_or_group.partition(".")
            values = [v for v in self.sweeps.get(head, [])[1:] if isinstance(v, str)]
            first = self.choices.get(head)
            if not values or not rest or not first or o.is_delete() or o.is_add() or o.is_force_add() \
                    or not OmegaConf.is_dict(self.cfg._get_node(head) if head in self.cfg else None):
                continue
            sub = rest.split(".")[0]
            added = set(self.cfg[head]) - (self._option_keys(head, first) or set(self.cfg[head]))
            missing = [v for v in values if (keys := self._option_keys(head, v)) is not None
                       and sub not in keys | added]
            if missing:
                keys = sorted(k for k in self._option_keys(head, missing[0]) if k not in ("_target_", "_partial_"))
                raise ConfigError(self._key_of_other_option(o.key_or_group, head, sub, missing, keys))


def _unknown_option(group: str, option, valid) -> ConfigError:
    """An option the group does not have; an optional plugin's option names its extra."""
    plugin = OPTIONAL_PLUGINS.get((group, option))
    if plugin and importlib.util.find_spec(plugin[0]) is None:
        return ConfigError(f"{group}={option} needs a Hydra plugin that is not installed, {plugin[1]}")
    return ConfigError(f"unknown option {group}={option!r}; valid choices: {', '.join(valid)}")


def _unknown_key_error(e: BaseException) -> bool:
    """Hydra's "Could not override 'key'": the key is not in the (struct) config."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    return isinstance(e.__cause__, (ConfigAttributeError, ConfigKeyError))


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def _one_line(e: BaseException) -> str:
    """Hydra's message and its cause's first line, in one line (without Hydra's search-path listing)."""
    text = str(e).split("\nConfig search path:")[0].split("\nSearch path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Error merging override ")]
    if e.__cause__ is not None and not isinstance(e.__cause__, ConfigError):
        lines.append(_first_line(e.__cause__))
    return "; ".join(ln.rstrip(".;") for ln in lines) or type(e).__name__


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_accelerators(composition: _Composition, overrides: list) -> None:
    """``trainer.accelerator=...`` typed on the command line (every value of a sweep): a name Lightning's
    AcceleratorRegistry knows (``onebit.training.checks.check_accelerator_name``); whether this machine has it is
    checked by the job, with Lightning's own reason."""
    typed = [o for o in overrides if o.key_or_group == "trainer.accelerator" and not o.is_delete()]
    if typed:  # Lightning's registry: imported only when the command line names an accelerator
        from onebit.training.checks import check_accelerator_name

        for value in (v for o in typed for v in composition._values(o)):
            check_accelerator_name(value)


def _check_writable_dirs(composition: _Composition, overrides: list) -> None:
    """The composed output root (the command line's, else ``ONEBIT_OUTPUTS``, else conf/train.yaml's default) and,
    when a job pretrains (its twin is kept in the pretrain cache), the composed ``cache_dir`` (the command line's,
    else ``ONEBIT_CACHE``, else ``<output_root>/cache``)."""
    from omegaconf.errors import OmegaConfBaseException

    cfg = composition.cfg
    given = {o.key_or_group for o in overrides}
    for key, env in (("output_root", OUTPUTS_ENV), ("cache_dir", CACHE_ENV)):
        try:
            path = cfg[key]
            if key == "cache_dir" and not _pretrains(composition):
                continue
        except OmegaConfBaseException:  # not in this config, or an interpolation preflight cannot resolve
            continue
        if isinstance(path, str):
            check_writable(path, env if key not in given and os.environ.get(env) else key)


def _pretrains(composition: _Composition) -> bool:
    """Whether a job of the command line trains a real-valued twin first (pretrain is not none, in the composed
    config or in a sweep's other values), which the pretrain cache keeps."""
    cfg = composition.cfg
    if is_real_model(cfg):
        return False
    names = [cfg.pretrain.name, *(v for v in composition.sweeps.get("pretrain", []) if isinstance(v, str))]
    return any(n != "none" for n in names)
