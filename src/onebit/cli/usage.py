"""The generated parts of ``python src/train.py --help`` (Hydra's app help, conf/hydra/help/onebit.yaml).

Nothing here is a second copy of a fact: the groups and their one-line descriptions are
:data:`onebit.core.registry.GROUPS`,
each group's options are the files of its folder (conf/<group>/, sweeps/ for ``sweeps``), the plain settings and
their descriptions are the top-level keys of conf/train.yaml with their comments, Hydra's launchers and sweepers
are what its ConfigStore holds (the installed plugins and onebit's own). The help template calls
``${onebit_help:groups}``, ``${onebit_help:settings}`` and ``${onebit_help:hydra}`` (resolver registered by
:func:`onebit.cli.resolvers.register_resolvers`); the current choices and values come from the config being helped, so
``--help experiment=bireal18_imagenet`` shows that experiment's choices.
"""

from __future__ import annotations

import json
import re
import textwrap

from omegaconf import DictConfig, OmegaConf

from onebit.core.paths import CONF_DIR
from onebit.core.registry import GROUPS, options

WIDTH = 118
NAME_WIDTH = 16
# a top-level key of conf/train.yaml, its value and its comment: `epochs: 8   # epochs of the binary stage`
_SETTING = re.compile(r"^(?P<key>[A-Za-z_]\w*):\s*(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$")


def text(part: str, root: DictConfig) -> str:
    """One generated part of the help: ``groups``, ``settings`` or ``hydra``; "" while Hydra composes the config
    (its merges resolve the template, before the choices are known), so only ``--help`` pays for it. ``$`` is
    doubled: Hydra passes the help through ``string.Template``."""
    parts = {"groups": groups, "settings": settings, "hydra": hydra_groups}
    if part not in parts:
        raise ValueError(f"onebit_help: unknown part {part!r}; choose one of {', '.join(parts)}")
    chosen = OmegaConf.select(root, "hydra.runtime.choices", default=None)   # Hydra's, set after composition
    return parts[part](root, dict(chosen)).replace("$", "$$") if chosen else ""


def _entry(name: str, description: str, rest: str = "", width: int = NAME_WIDTH) -> list[str]:
    """``  name   description`` and, indented under the description, ``rest`` wrapped to the help's width."""
    indent = " " * (width + 2)
    if len(name) >= width:  # a long name on a line of its own
        lines = [f"  {name}", *textwrap.wrap(description, WIDTH, initial_indent=indent, subsequent_indent=indent)]
    else:
        lines = textwrap.wrap(description, WIDTH, initial_indent=f"  {name:<{width}}",
                              subsequent_indent=indent) or [f"  {name}"]
    if rest:
        lines += textwrap.wrap(rest, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
    return lines


def groups(root: DictConfig, chosen: dict) -> str:
    """Every group of :data:`GROUPS`, its description and its options; the current choice in brackets."""
    lines = ["== Configuration groups ==  choose one option per group: group=option  ([option]: the current choice)"]
    for group, spec in GROUPS.items():
        description = spec.description
        names = [f"[{o}]" if o == chosen.get(group) else o for o in options(group)]
        lines += _entry(group, description, ", ".join(names))
    return "\n".join(lines)


def settings(root: DictConfig, chosen: dict) -> str:
    """The plain (non-group) top-level keys of conf/train.yaml with their current value (as configured,
    interpolations unresolved) and their comment."""
    values = OmegaConf.to_container(root, resolve=False)
    rows = []
    for line in (CONF_DIR / "train.yaml").read_text().splitlines():
        m = _SETTING.match(line)
        if not m or m["key"] in ("defaults", "hydra") or m["key"] in GROUPS:
            continue
        value = values.get(m["key"], m["value"])
        value = json.dumps(value) if value is None or isinstance(value, bool) else value   # null, true, false
        rows.append((f"{m['key']}={value}", m["comment"] or ""))
    width = min(max([0, *(len(name) for name, _ in rows)]) + 2, 26)
    lines = ["== Settings ==  key=value; any key of a group too (optimizer.lr=0.01, trainer.<Trainer argument>=...)"]
    for name, comment in rows:
        lines += _entry(name, comment, width=width)
    return "\n".join(lines)


def hydra_groups(root: DictConfig, chosen: dict) -> str:
    """Hydra's launchers and sweepers: the ones its ConfigStore holds (installed plugins and onebit's own)."""
    from hydra.core.config_store import ConfigStore

    lines = ["== Hydra's launchers and sweepers ==  hydra/launcher=<option>, hydra/sweeper=<option> (with -m)"]
    for group in ("hydra/launcher", "hydra/sweeper"):
        try:
            names = sorted(n.removesuffix(".yaml") for n in ConfigStore.instance().list(group) if n.endswith(".yaml"))
        except OSError:  # nothing registered under this group
            names = []
        note = "" if group != "hydra/sweeper" or "optuna" in names else "  (optuna: pip install -e '.[optuna]')"
        lines += _entry(group, ", ".join(f"[{n}]" if n == chosen.get(group) else n for n in names) + note)
    return "\n".join(lines)
