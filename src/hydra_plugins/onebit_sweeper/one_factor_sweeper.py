"""A one-factor-at-a-time (OFAT) sweeper: ``hydra/sweeper=one_factor``.

An ablation around one base configuration: the *base* job, then for each *factor* each of its alternatives, one
job each, that differs from the base in that one key only. ``params`` (like the basic sweeper's) and the command
line's sweeps form a grid that is crossed with the design: every grid point runs the whole design.

    hydra:
      sweeper:
        base: {model: bireal18, pretrain: clip, weight: magnitude_aware, sign: approx, shortcut: "true"}
        factors: {shortcut: ["false"], sign: [ste], weight: [plain], pretrain: [relu]}
        params: {seed: 0,1,2}

gives 5 design points x 3 seeds = 15 jobs, in the order: for each grid point (seed), the base, then each
factor's alternatives in the declared order.

The command line and ``params``:

- a key that is neither in ``base`` nor a factor (``seed=0,1``, ``data=digits,fashion_mnist``, ``epochs=2``) is
  a grid axis, crossed with the design exactly as the basic sweeper crosses its overrides (a plain value is a
  grid axis of one value); a later entry of the same key replaces an earlier one (command line over ``params``);
- a key that is in ``base`` (a factor or not) replaces the base value in every design point: ``model=bireal34``
  runs the design around Bi-Real-34; a sweep of it (``model=bireal18,bireal34``) runs the whole design around
  each value. The factor's own points keep their alternatives; an alternative equal to the new base value would
  repeat the base job and is left out, with a warning (``sign=ste`` leaves 4 design points).

Refused, with one line naming the key and value, before any job: an empty ``factors``, a factor that is not in
``base``, a factor without alternatives, an alternative equal to its base value or listed twice, a base value
that is a sweep. Batching (``max_batch_size``), the launcher and the callbacks are the basic sweeper's: this
class only changes which override lists it launches.

With ``hydra.sweeper.seeds=auto`` the seeds are chosen by the data (:mod:`.adaptive`): the design runs on a few
seeds, and only the factor points still undecided against the base (with the base) get more.
"""

# no `from __future__ import annotations`: Hydra executes plugin modules before sys.modules has them, and
# OmegaConf reads the dataclass annotations as types
import itertools
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hydra._internal.core_plugins import basic_sweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import CompactHydraException, HydraException

from hydra_plugins.onebit_sweeper import adaptive

log = logging.getLogger(__name__)


@dataclass
class OneFactorSweeperConf(adaptive.AdaptiveSeedsConf):
    _target_: str = "hydra_plugins.onebit_sweeper.one_factor_sweeper.OneFactorSweeper"
    max_batch_size: Optional[int] = None
    # override values of the base configuration: key -> value (``model: bireal18``, ``shortcut: "true"``)
    base: Dict[str, str] = field(default_factory=dict)
    # per factor (a key of base), its alternatives: each gives one job = base with that one key changed
    factors: Dict[str, List[str]] = field(default_factory=dict)
    # a grid crossed with every design point, like the basic sweeper's params (``seed: 0,1,2``)
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="one_factor", node=OneFactorSweeperConf, provider="onebit")


class OneFactorDesignError(CompactHydraException):
    """A one-factor design that cannot run; its message is one line naming the key and value."""


def _ident(o: Override) -> str:
    """The key an override sets, without its +/++/~ prefix (``model``, ``data.root``, ``group@pkg``)."""
    return o.key_or_group if o.package is None else f"{o.key_or_group}@{o.package}"


class OneFactorSweeper(basic_sweeper.BasicSweeper):
    """The basic sweeper with a one-factor-at-a-time design in place of its cartesian product."""

    def __init__(self, max_batch_size: Optional[int] = None, base: Optional[Mapping[str, Any]] = None,
                 factors: Optional[Mapping[str, Sequence[Any]]] = None,
                 params: Optional[Mapping[str, str]] = None, **settings: Any) -> None:
        super().__init__(max_batch_size=max_batch_size, params=dict(params or {}))
        self.base = {str(k): v for k, v in (base or {}).items()}
        self.factors = {str(k): list(v) for k, v in (factors or {}).items()}
        self.settings = {k: settings.get(k, getattr(adaptive.AdaptiveSeedsConf, k)) for k in adaptive.FIELDS}
        self.sequential = None

    # ------------------------------------------------------------------------------------------------------
    # The design
    # ------------------------------------------------------------------------------------------------------

    def design(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """(base: key -> override ``key=value``, [(factor key, override ``key=alternative``)...] in the declared
        order). Raises :class:`OneFactorDesignError` for a design that cannot run."""
        parser = OverridesParser.create()

        def parse(key: str, value: Any, where: str) -> Override:
            text = f"{key}={_text(value)}"
            try:
                return parser.parse_override(text)
            except HydraException as e:
                first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                raise OneFactorDesignError(f"one_factor sweeper: cannot parse {where} {text!r}: {first}") from None

        if not self.factors:
            raise OneFactorDesignError("one_factor sweeper: hydra.sweeper.factors is empty; give at least one factor "
                                       "(key: [alternative, ...]) to vary around hydra.sweeper.base")
        base: dict[str, Override] = {}
        for key, value in self.base.items():
            o = parse(key, value, "hydra.sweeper.base")
            if o.is_sweep_override():
                raise OneFactorDesignError(
                    f"one_factor sweeper: hydra.sweeper.base.{key}={_text(value)} is a sweep; the base takes one value "
                    f"per key (vary it with hydra.sweeper.factors.{key}, or sweep it in params / on the command line)")
            base[key] = o
        points: list[tuple[str, str]] = []
        for key, alternatives in self.factors.items():
            if key not in self.base:
                raise OneFactorDesignError(
                    f"one_factor sweeper: factor {key!r} is not in hydra.sweeper.base (base keys: "
                    f"{', '.join(self.base) or 'none'}); give its base value there")
            if not alternatives:
                raise OneFactorDesignError(f"one_factor sweeper: factor {key!r} has no alternatives; list at least "
                                           f"one value other than its base value {_text(self.base[key])}")
            own = base[key]
            seen: list[str] = []
            for alt in alternatives:
                o = parse(key, alt, f"hydra.sweeper.factors.{key}")
                values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else (
                    [_text(alt)] if not o.is_sweep_override() else None)
                if values is None:
                    raise OneFactorDesignError(f"one_factor sweeper: factor {key}={_text(alt)} is a "
                                               f"{o.value_type.name} sweep; list its alternatives one by one")
                for v in values:
                    if _same(f"{key}={v}", own):
                        raise OneFactorDesignError(
                            f"one_factor sweeper: factor {key}={v} equals its base value {key}="
                            f"{own.get_value_element_as_str()}; an alternative must differ from the base")
                    if v in seen:
                        raise OneFactorDesignError(f"one_factor sweeper: factor {key}={v} is listed twice")
                    seen.append(v)
                    points.append((_ident(o), f"{key}={v}"))
        return {_ident(o): f"{key}={_text(self.base[key])}" for key, o in base.items()}, points

    def job_overrides(self, overrides: Sequence[Override]) -> list[list[str]]:
        """Every job's override list: for each point of the grid (``params`` then ``overrides``, crossed like
        the basic sweeper does), the base, then each factor's alternatives; see the module docstring."""
        return [job for _, job in self.design_jobs(overrides)]

    def design_jobs(self, overrides: Sequence[Override]) -> list[tuple[str | None, list[str]]]:
        """:meth:`job_overrides`, each job with its design point: None for a base job, else the factor's override
        (``shortcut=false``)."""
        base, points = self.design()
        grid: "OrderedDict[str, tuple[str, list[str]]]" = OrderedDict()   # key element -> (ident, key=value...)
        for o in overrides:
            key = o.get_key_element()
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    assert o.value_type is not None
                    raise HydraException(f"{type(self).__name__} does not support sweep type : {o.value_type.name}")
                grid[key] = (_ident(o), [f"{key}={v}" for v in o.sweep_string_iterator()])
            else:
                grid[key] = (_ident(o), [f"{key}={o.get_value_element_as_str()}"])
        parser = OverridesParser.create()
        jobs: list[tuple[str | None, list[str]]] = []
        dropped: set[str] = set()
        for combo in itertools.product(*(values for _, values in grid.values())):
            center = dict(base)
            extra = []
            for (ident, _), text in zip(grid.values(), combo):
                if ident in center:
                    center[ident] = text
                else:
                    extra.append(text)
            jobs.append((None, [*center.values(), *extra]))
            for ident, text in points:
                if _same(text, parser.parse_override(center[ident])):
                    if text not in dropped:
                        dropped.add(text)
                        log.warning("one_factor sweeper: %s is the base value here (set on the command line or in "
                                    "params); its factor point would repeat the base job and is left out", text)
                    continue
                jobs.append((text, [*(text if k == ident else v for k, v in center.items()), *extra]))
        n_grid = math.prod(len(values) for _, values in grid.values())
        log.info("one_factor sweeper: base + %d factor point(s) x %d grid point(s) = %d jobs", len(points), n_grid,
                 len(jobs))
        return jobs

    # BasicSweeper.sweep calls self.split_arguments(overrides, max_batch_size) on params + command line
    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]
                        ) -> List[List[List[str]]]:  # type: ignore[override]
        jobs = self.job_overrides(overrides)
        assert max_batch_size is None or max_batch_size > 0
        if max_batch_size is None:
            return [jobs]
        return list(self.split_overrides_to_chunks(jobs, max_batch_size))

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.design()  # a design that cannot run stops the sweep here, in one line, before any job
        self.sequential = adaptive.design(self.settings)   # so does a bad hydra.sweeper.seeds setting
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        if self.sequential is None:
            return super().sweep(arguments)
        return adaptive.run(self, arguments, lambda overrides: adaptive.star_plan(self.design_jobs(overrides)))


def _text(value: Any) -> str:
    """A config value as override text (``True`` from an unquoted YAML ``true`` becomes ``true``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def _same(text: str, other: Override) -> bool:
    """Whether the override ``text`` sets the same value as ``other`` (compared as Hydra parses them)."""
    o = OverridesParser.create().parse_override(text)
    return not o.is_sweep_override() and not other.is_sweep_override() and \
        o.get_value_element_as_str() == other.get_value_element_as_str()
