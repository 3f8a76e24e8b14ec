"""Seeds chosen by the data: ``hydra.sweeper.seeds=auto`` on the ``grid`` and ``one_factor`` sweepers.

    python src/train.py -m sweeps=bireal_conclusions hydra.sweeper.seeds=auto            # one factor at a time
    python src/train.py -m sign=approx,ste weight=plain,magnitude_aware hydra.sweeper.seeds=auto \\
        hydra.sweeper.initial_seeds=3 hydra.sweeper.seed_step=2 hydra.sweeper.max_seeds=10 hydra.sweeper.max_runs=60

The sweep runs its design on seeds 0 .. n_1 - 1, reads each job's record (``job.json`` -> record), decides each
comparison at this look (:func:`onebit.results.sequential.decide`: a group-sequential design, Lan-DeMets
O'Brien-Fleming spending, Holm across the open comparisons, Bonferroni over looks), prints one line per
comparison, then launches the next seeds only for the cells of the comparisons still open, until every comparison
is decided, ``max_seeds`` is reached, or the next look would exceed ``max_runs`` jobs (the last line says which).

- **Comparisons.** one_factor: each factor point vs the base (``shortcut=false vs base``); grid: for each swept key
  with >= 2 values, each later value vs the first (``sign=ste vs sign=approx``). The difference of one seed is
  100 (m_a - m_b) of ``metric`` on the final stage (points), averaged over the other keys' combinations (a grid's
  other keys, the command line's sweeps crossed with a one-factor design). A seed for which one of those jobs
  failed or lacks the metric gives no pair to that comparison, and the failed job is named.
- **Seeds.** The sweeper owns ``seed``: seeds 0, 1, 2, ... (those of a fixed design with ``seed=0,1,2``, so the
  jobs are shared with it). A ``seed`` in ``params`` (a sweep file's fixed design) is replaced, with a line that
  says so; a ``seed`` on the command line is refused (use ``hydra.sweeper.initial_seeds`` / ``max_seeds``).
- **The record.** Each job gets ``++sequential={...}`` (:meth:`onebit.results.sequential.Design.as_config`): the
  design is in its record, outside its identity (``onebit.records.identity.NOT_IN_IDENTITY``), so the job is the
  same job as in a fixed design, and the tables can recompute the verdicts.
- **Resume.** Decisions are a pure function of the records. Killed and run again, the same command launches look 1
  again (every finished job is skipped by onebit's job index, never trained twice; an interrupted one resumes),
  recomputes the decisions and goes on.

Refused in one line before any job: ``seeds`` other than ``auto`` / null, a bad ``initial_seeds``, ``seed_step``,
``max_seeds`` (< ``initial_seeds``), ``alpha``, ``metric`` or ``max_runs`` (fewer than the first look's jobs), a
command-line ``seed``, and a design without a comparison. onebit is imported inside the functions: Hydra imports
every plugin module to discover plugins, and that scan should not import torch.
"""

# no `from __future__ import annotations`: OmegaConf reads the dataclass annotations as types
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import CompactHydraException

PREFIX = "onebit: seeds=auto"


@dataclass
class AdaptiveSeedsConf:
    """The sweeper fields of seeds chosen by the data (both sweepers' configs inherit them). The defaults are
    onebit.results.sequential.Design's (tests/test_adaptive_seeds.py checks that they agree)."""

    seeds: str | None = None        # auto: seeds chosen by the data; null: the sweep's own seeds, unchanged
    initial_seeds: int = 3             # seeds of the first look
    seed_step: int = 2                 # seeds added at each later look
    max_seeds: int = 10                # the last look
    max_runs: int | None = None     # a budget of jobs (all looks together); null: none
    alpha: float = 0.05                # the family-wise false-positive rate of all looks together
    metric: str = "test/top1"          # of each run's final stage (onebit.core.registry.DEFAULT_METRIC)


FIELDS = tuple(f.name for f in fields(AdaptiveSeedsConf))


class AdaptiveSeedsError(CompactHydraException):
    """A seeds=auto sweep that cannot run; its message is one line naming the value and the valid choices."""


def design(settings: dict[str, Any]):
    """The sequential design of the sweeper's settings (:data:`FIELDS`), None when ``seeds`` is null; raises
    :class:`AdaptiveSeedsError` for a bad value."""
    from onebit.results.sequential import Design

    seeds = settings.get("seeds")
    if seeds is None:
        return None
    if seeds != "auto":
        raise AdaptiveSeedsError(f"hydra.sweeper.seeds={seeds} is invalid: choose auto (seeds chosen by the data) or "
                                 "null (the sweep's own seeds)")
    try:
        return Design(**{k: settings[k] for k in FIELDS if k != "seeds"})
    except ValueError as e:
        raise AdaptiveSeedsError(f"hydra.sweeper.{e}") from None


# ----------------------------------------------------------------------------------------------------------
# The plan: cells and comparisons
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The design without its seeds: ``cells`` (override lists, in launch order) and ``comparisons``, name ->
    [(cell a, cell b), ...]: one seed's difference is the mean of 100 (m_a - m_b) over the pairs."""

    cells: list[list[str]]
    comparisons: dict[str, list[tuple[int, int]]]
    extra: list[str] = field(default_factory=list)   # appended to every job (++sequential={...})

    def label(self, cell: int, seed: int) -> str:
        """A job in words: the overrides that tell its cell apart from the others, and its seed."""
        common = set.intersection(*(set(c) for c in self.cells))
        return " ".join([*(o for o in self.cells[cell] if o not in common), f"seed={seed}"])

    def cells_of(self, names: Sequence[str]) -> list[int]:
        """The cells the comparisons ``names`` read, in launch order (a cell shared by several once)."""
        used = {i for n in names for pair in self.comparisons[n] for i in pair}
        return [i for i in range(len(self.cells)) if i in used]

    def jobs(self, seeds: Sequence[int], cells: Sequence[int]) -> list[list[str]]:
        """The override lists of ``cells`` x ``seeds``: for each seed, the cells in launch order."""
        return [[*self.cells[i], f"seed={s}", *self.extra] for s in seeds for i in cells]

    def diffs(self, values: dict[tuple[int, int], float | None]) -> dict[str, dict[int, list[float]]]:
        """name -> {seed: [100 (m_a - m_b) per pair]} from ``values`` (cell, seed) -> metric (None: failed); a seed
        enters a comparison only when every cell of its pairs has a value at that seed."""
        seeds = sorted({s for _, s in values})
        out: dict[str, dict[int, list[float]]] = {}
        for name, pairs in self.comparisons.items():
            out[name] = {}
            for s in seeds:
                v = [(values.get((a, s)), values.get((b, s))) for a, b in pairs]
                if all(x is not None and y is not None for x, y in v):
                    out[name][s] = [100.0 * (x - y) for x, y in v]
        return out


def without_seed(overrides: Sequence[Override], arguments: Sequence[str]) -> tuple[list[Override], str | None]:
    """``overrides`` (params + command line) without ``seed``; refuses a command-line ``seed``; returns the
    params' seed text that was replaced (None if there was none)."""
    parser = OverridesParser.create()
    for o in parser.parse_overrides(list(arguments)):
        if o.key_or_group == "seed":
            raise AdaptiveSeedsError(
                f"{o.input_line} is refused with hydra.sweeper.seeds=auto: the sweeper chooses the seeds (0, 1, 2, ...); "
                "set hydra.sweeper.initial_seeds / seed_step / max_seeds instead")
    replaced = [o for o in overrides if o.key_or_group == "seed"]
    kept = [o for o in overrides if o.key_or_group != "seed"]
    return kept, (replaced[-1].input_line if replaced else None)


def grid_plan(overrides: Sequence[Override]) -> Plan:
    """A grid's cells (the basic sweeper's cartesian product, in its order) and comparisons: for each key with >= 2
    values, each later value vs the first, paired over the other keys' combinations."""
    axes: OrderedDict[str, list[str]] = OrderedDict()
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise AdaptiveSeedsError(f"{o.input_line}: a {o.value_type.name} sweep; list the values one by one")
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    cells = [list(c) for c in itertools.product(*axes.values())]
    index = {tuple(c): i for i, c in enumerate(cells)}
    comparisons: dict[str, list[tuple[int, int]]] = {}
    for a, values in enumerate(axes.values()):
        for v in values[1:]:
            comparisons[f"{v} vs {values[0]}"] = [(i, index[(*c[:a], values[0], *c[a + 1:])])
                                                  for i, c in enumerate(cells) if c[a] == v]
    return Plan(cells, comparisons)


def star_plan(tagged: Sequence[tuple[str | None, list[str]]]) -> Plan:
    """A one-factor design's cells (its jobs, in order) and comparisons, from ``(None, base job)`` / ``(factor
    point, its job)`` in order: each factor point vs the base of its block (paired over the grid's points)."""
    comparisons: dict[str, list[tuple[int, int]]] = {}
    base = None
    for i, (point, _) in enumerate(tagged):
        if point is None:
            base = i
        else:
            comparisons.setdefault(f"{point} vs base", []).append((i, base))
    return Plan([list(job) for _, job in tagged], comparisons)


# ----------------------------------------------------------------------------------------------------------
# The looks
# ----------------------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"{PREFIX}{text}", flush=True)


def _job_value(ret, metric: str) -> tuple[float | None, str]:
    """(the final stage's ``metric`` of the job's record, or None; what happened) of a launched job."""
    from onebit.records.layout import RECORD_NAME
    from onebit.records.record import read_record
    from onebit.results.cells import metric as metric_of
    from onebit.training.jobs import job_outcome

    job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    state, detail = job_outcome(job_dir, ret.cfg.get("output_root") if ret.cfg is not None else None)
    if state not in ("finished", "skipped"):
        return None, f"{state}: {detail}"
    value = metric_of(read_record(Path(detail) / RECORD_NAME), metric)
    return value, (state if value is not None else f"{state}, but its record has no {metric}")


def run(sweeper, arguments: list[str], plan_of: Callable[[list[Override]], Plan]) -> list[Sequence[Any]]:
    """The seeds=auto loop of ``sweeper`` (a BasicSweeper set up by Hydra, with ``self.sequential`` its Design):
    see the module docstring. Returns the launched batches' JobReturns, as BasicSweeper.sweep does."""
    from omegaconf import OmegaConf

    from onebit.core.killpoints import kill_point
    from onebit.results.sequential import decide
    from onebit.results.stats import INCONCLUSIVE

    d = sweeper.sequential
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    overrides, replaced = without_seed(parser.parse_overrides([*sweeper._parse_config(), *arguments]), arguments)
    plan = plan_of(overrides)
    if not plan.comparisons:
        raise AdaptiveSeedsError("hydra.sweeper.seeds=auto needs a comparison: sweep at least one key besides seed "
                                 "(e.g. sign=approx,ste)")
    plan.extra = [f"++sequential={_override_value(d.as_config())}"]
    ns, lv = d.looks(), d.levels()
    first = len(plan.jobs(range(ns[0]), range(len(plan.cells))))
    if d.max_runs is not None and d.max_runs < first:
        raise AdaptiveSeedsError(f"hydra.sweeper.max_runs={d.max_runs} is invalid: the first look alone runs {first} "
                                 f"jobs ({len(plan.cells)} cells x {ns[0]} seeds)")
    sweep_dir = Path(sweeper.config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
    if replaced:
        _say(f": {replaced} (params) is replaced by the seeds chosen by the data")
    _say(f": {d.describe()}; {len(plan.comparisons)} comparison(s) on {d.metric}: {', '.join(plan.comparisons)}")

    values: dict[tuple[int, int], float | None] = {}
    returns: list[Sequence[Any]] = []
    cells = list(range(len(plan.cells)))
    launched, job_idx, done_seeds = 0, 0, 0
    decisions: dict[str, Any] = {}
    for k, n in enumerate(ns):
        seeds = range(done_seeds, n)
        jobs = plan.jobs(seeds, cells)
        if d.max_runs is not None and launched + len(jobs) > d.max_runs:
            _say(f" stopped after look {k} of {len(ns)} ({done_seeds} seeds): the next look's {len(jobs)} jobs would "
                 f"exceed hydra.sweeper.max_runs={d.max_runs} ({launched} run); {_open_text(decisions)}")
            return returns
        if k:
            kill_point(f"seeds_look:{k + 1}")   # tests/test_adaptive_seeds.py: a sweep killed between two looks
        slots = [(i, s) for s in seeds for i in cells]   # the (cell, seed) of each job, in plan.jobs' order
        for batch in sweeper.split_overrides_to_chunks(jobs, sweeper.max_batch_size):
            sweeper.validate_batch_is_legal(batch)
            results = sweeper.launcher.launch(batch, initial_job_idx=job_idx)
            for r in results:
                _ = r.return_value   # as BasicSweeper: a job that raised stops the sweep
            for j, r in enumerate(results):
                i, s = slots.pop(0)
                value, what = _job_value(r, d.metric)
                values[(i, s)] = value
                if value is None:
                    users = [c for c, pairs in plan.comparisons.items() if any(i in p for p in pairs)]
                    _say(f": job {job_idx + j} ({plan.label(i, s)}) {what}; seed {s} gives no pair to "
                         f"{', '.join(users)}")
            job_idx += len(batch)
            launched += len(batch)
            returns.append(results)
        done_seeds = n
        decisions = decide(plan.diffs(values), ns, d.alpha, through=k + 1)
        for name, dec in decisions.items():
            _say(f" look {k + 1} of {len(ns)} ({n} seeds, level {lv[k]:.3g}): {_decision_text(name, dec, k + 1)}")
        still = [c for c, dec in decisions.items() if dec.verdict == INCONCLUSIVE]
        if not still:
            _say(f" stopped after look {k + 1} of {len(ns)} ({n} seeds): every comparison is decided")
            return returns
        if k + 1 == len(ns):
            _say(f" stopped after look {k + 1} of {len(ns)} ({n} seeds = hydra.sweeper.max_seeds): "
                 f"{_open_text(decisions)}")
            return returns
        cells = plan.cells_of(still)
        added = range(n, ns[k + 1])
        for c in still:
            dec = decisions[c]
            why = (f"{dec.n} pair(s), no test" if math.isnan(dec.p_adj) else
                   f"Holm-adjusted p {dec.p_adj:.3g} >= level {lv[k]:.3g}")
            _say(f" look {k + 1}: {c} inconclusive ({why}): adding seed(s) {_seeds_text(added)} to its "
                 f"{len(plan.cells_of([c]))} cells")
        _say(f" look {k + 2}: seed(s) {_seeds_text(added)} for {len(cells)} of {len(plan.cells)} cells "
             f"({len(cells) * len(added)} jobs)")
    return returns


def _override_value(value: Any) -> str:
    """A value in Hydra's override grammar: ``{a:1,b:'test/top1',c:[3,4],d:null}``."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _seeds_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def _decision_text(name: str, dec, look: int) -> str:
    a, b = name.split(" vs ", 1)
    if dec.n == 0:
        return f"{name}: no pairs yet: inconclusive"
    if math.isnan(dec.p):
        return f"{name} {dec.mean:+.2f} points ({dec.n} pair): no test: inconclusive"
    side = f" ({a} > {b})" if dec.mean > 0 else f" ({a} < {b})"
    numbers = (f"{dec.mean:+.2f} points ({dec.n} pairs), p={dec.p:.3g}, Holm-adjusted {dec.p_adj:.3g}: "
               f"{dec.verdict}{side if dec.decided else ''}")
    return f"{name} {numbers}" + (f" at look {dec.look}" if dec.decided and dec.look != look else "")


def _open_text(decisions) -> str:
    still = [c for c, dec in decisions.items() if not dec.decided]
    return f"{len(still)} comparison(s) inconclusive" + (f": {', '.join(still)}" if still else "")
