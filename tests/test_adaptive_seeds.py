"""Seeds chosen by the data (``hydra.sweeper.seeds=auto``): the group-sequential procedure of
onebit.results.sequential (its levels, its decisions, and by simulation of >= 2,000 designs: a family-wise
false-positive rate <= alpha where peeking at alpha inflates it, and earlier stops than the fixed design on true
effects), the sweepers' job lists (unchanged with seeds=null, the first look, an extension = the open comparisons'
cells only), real multiruns on tiny digits (the look lines, the records with their design and unchanged identity, a
re-run that trains nothing, a sweep killed between two looks that resumes, a failed job named) and bad input."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from conftest import TINY_FULL, compose_cfg, run_train
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from scipy import stats as sps
from test_one_factor import BASE, SWEEP, with_

# the modules, not their classes: Hydra's plugin scan re-executes plugin modules in place (tests/test_one_factor.py)
from hydra_plugins.onebit_sweeper import adaptive, grid_sweeper
from hydra_plugins.onebit_sweeper import one_factor_sweeper as ofs
from onebit.core.registry import DEFAULT_METRIC
from onebit.records.identity import job_key
from onebit.records.layout import RECORD_NAME
from onebit.records.record import read_record
from onebit.results import sequential as S
from onebit.results.stats import ALPHA, CONTRADICTED, INCONCLUSIVE, SUPPORTED, holm, paired_p

PARSE = OverridesParser.create().parse_overrides
DESIGN = S.Design()   # the sweeper's defaults: looks at 3, 5, 7, 9, 10 seeds


# ----------------------------------------------------------------------------------------------------------
# The procedure
# ----------------------------------------------------------------------------------------------------------


def test_looks_and_levels_spend_alpha():
    assert S.looks(3, 2, 10) == DESIGN.looks() == (3, 5, 7, 9, 10)
    assert S.looks(3, 1, 5) == (3, 4, 5) and S.looks(2, 2, 2) == (2,) and S.looks(4, 3, 9) == (4, 7, 9)
    # A(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) = erfc(z / sqrt(2 t)), from the standard library
    z = NormalDist().inv_cdf(1 - ALPHA / 2)
    spent = [math.erfc(z / math.sqrt(2 * n / 10)) for n in (3, 5, 7, 9, 10)]
    assert DESIGN.levels() == pytest.approx(np.diff([0, *spent]), rel=1e-9)
    assert sum(DESIGN.levels()) == pytest.approx(ALPHA) and spent[-1] == pytest.approx(ALPHA)
    assert DESIGN.levels()[0] == pytest.approx(3.46e-4, rel=1e-2)   # an early stop needs a large effect
    assert all(a < b for a, b in zip(DESIGN.levels()[:3], DESIGN.levels()[1:4]))
    # the record's copy of the design reads back as the same design
    node = S.Design(2, 1, 3, 0.01, "val/top1", max_runs=9).as_config()
    assert node["spending"] == S.SPENDING and node["looks"] == [2, 3] and len(node["levels"]) == 2
    assert S.Design.from_config(node) == S.Design(2, 1, 3, 0.01, "val/top1") and S.Design.from_config(None) is None


def test_the_sweepers_defaults_are_the_designs():
    conf = adaptive.AdaptiveSeedsConf()
    assert conf.seeds is None
    assert (conf.initial_seeds, conf.seed_step, conf.max_seeds, conf.alpha, conf.metric, conf.max_runs) == (
        DESIGN.initial_seeds, DESIGN.seed_step, DESIGN.max_seeds, DESIGN.alpha, DESIGN.metric, DESIGN.max_runs)
    assert conf.metric == DEFAULT_METRIC and conf.alpha == ALPHA


def test_decide_looks_at_the_first_n_k_seeds_only():
    ns = (3, 5)   # levels 0.0114, 0.0386 (alpha 0.05)
    strong = dict(enumerate([10.0, 10.5, 9.5, 10.2, 9.8]))      # decided at look 1
    late = dict(enumerate([3.0, 1.0, 4.0, 2.5, 3.5]))            # only the 5 pairs of look 2 decide it
    against = {s: -v for s, v in late.items()}
    noise = dict(enumerate([1.0, -1.0, 0.5, -0.4, 0.1]))
    d = S.decide({"strong": strong, "late": late, "against": against, "noise": noise}, ns)
    lv = S.levels(ns)
    assert d["strong"] == S.Decision(SUPPORTED, 1, 3, 10.0, paired_p([10, 10.5, 9.5]), d["strong"].p_adj, lv[0])
    # Holm at look 1 across the 4 open comparisons: the smallest p at level / 4
    assert d["strong"].p_adj == pytest.approx(4 * d["strong"].p)
    assert (d["late"].verdict, d["late"].look, d["late"].n) == (SUPPORTED, 2, 5)
    assert (d["against"].verdict, d["against"].look) == (CONTRADICTED, 2)
    # at look 2 the family is the 3 comparisons still open
    assert d["late"].p_adj == pytest.approx(holm([paired_p(list(late.values())), paired_p(list(against.values())),
                                                  paired_p(list(noise.values()))])[0])
    assert (d["noise"].verdict, d["noise"].look, d["noise"].level) == (INCONCLUSIVE, 2, lv[1])
    # a sweep that stopped after look 1 (its budget) is not tested at a look it never made
    first = S.decide({"late": {s: late[s] for s in range(3)}}, ns)
    assert (first["late"].verdict, first["late"].look) == (INCONCLUSIVE, 1)
    # a failed seed gives no pair; a seed's several differences (a grid's other keys) are averaged; more seeds than
    # the last look count nowhere
    d = S.decide({"x": {0: [1.0, 3.0], 2: 2.5, 4: 2.2, 5: 100.0, 6: -100.0}}, ns)
    assert (d["x"].n, d["x"].mean) == (3, pytest.approx((2.0 + 2.5 + 2.2) / 3))
    assert S.decide({"x": {0: 1.0}}, ns)["x"].verdict == INCONCLUSIVE   # one pair: no test


# ----------------------------------------------------------------------------------------------------------
# Simulation: >= 2,000 designs of 4 comparisons, each pair's difference ~ N(effect, 1)
# ----------------------------------------------------------------------------------------------------------

DESIGNS = 2000
M = 4


def simulate(effect: float, seed: int, design: S.Design = DESIGN):
    """(diffs [design, seed, comparison], the decisions of each design) for DESIGNS designs."""
    rng = np.random.default_rng(seed)
    diffs = rng.normal(effect, 1.0, size=(DESIGNS, design.max_seeds, M))
    decisions = [S.decide({c: dict(enumerate(d[:, c])) for c in range(M)}, design.looks(), design.alpha)
                 for d in diffs]
    return diffs, decisions


def peeking(diffs: np.ndarray, ns, alpha: float) -> np.ndarray:
    """Whether each design rejects a comparison at some look when every look tests at the full alpha (Holm across
    the 4, no spending): what looking after each batch does without a sequential procedure."""
    rejected = np.zeros(len(diffs), bool)
    for n in ns:
        p = sps.ttest_1samp(diffs[:, :n, :], 0.0, axis=1).pvalue
        rejected |= np.array([min(holm(row, alpha)) < alpha for row in p])
    return rejected


@pytest.mark.slow  # 2,000 designs x 5 looks x 4 t-tests
def test_false_positive_rate_stays_at_or_below_alpha():
    diffs, decisions = simulate(0.0, seed=20260)
    false = np.array([any(x.decided for x in d.values()) for d in decisions])
    # <= alpha, up to the binomial noise of 2,000 designs (one-sided 99.9 %)
    assert false.mean() <= sps.binom.ppf(0.999, DESIGNS, ALPHA) / DESIGNS
    assert false.mean() <= ALPHA   # and in fact below it: the union bound over looks is conservative
    # the test can fail: looking after each batch at the full alpha, the same designs exceed alpha clearly
    naive = peeking(diffs, DESIGN.looks(), ALPHA)
    assert naive.mean() > sps.binom.ppf(0.999, DESIGNS, ALPHA) / DESIGNS and naive.mean() > 2 * false.mean()


@pytest.mark.slow  # 2,000 designs x up to 5 looks x 4 t-tests
def test_stops_earlier_than_the_fixed_design_on_true_effects():
    effect = 1.5   # standard deviations of a pair's difference
    diffs, decisions = simulate(effect, seed=20261)
    ns = DESIGN.looks()
    used = np.array([[ns[x.look - 1] if x.decided else ns[-1] for x in d.values()] for d in decisions])
    power = np.mean([[x.verdict == SUPPORTED for x in d.values()] for d in decisions])
    wrong = np.mean([[x.verdict == CONTRADICTED for x in d.values()] for d in decisions])
    # the fixed design: every comparison at max_seeds, Holm across the 4 at alpha
    p = sps.ttest_1samp(diffs, 0.0, axis=1).pvalue
    fixed = np.mean([np.array(holm(row, ALPHA)) < ALPHA for row in p])
    # a comparison's cells stop at its decision; the base (shared) stops when the last one is decided
    assert used.mean() < 0.85 * DESIGN.max_seeds and used.max(axis=1).mean() < DESIGN.max_seeds
    assert power >= 0.85 and wrong == 0.0 and fixed >= power   # the price of looking: a little power
    # runs of a one-factor design (base + 4 points) against the fixed design's 5 x 10
    runs = used.max(axis=1) + used.sum(axis=1)
    assert runs.mean() < 0.85 * (M + 1) * DESIGN.max_seeds


# ----------------------------------------------------------------------------------------------------------
# The job lists
# ----------------------------------------------------------------------------------------------------------


def star(argv=(), **kw) -> tuple[ofs.OneFactorSweeper, adaptive.Plan]:
    conf = {"base": dict(SWEEP.base), "factors": {k: list(v) for k, v in SWEEP.factors.items()},
            "params": dict(SWEEP.params), **kw}
    s = ofs.OneFactorSweeper(**conf)
    overrides, replaced = adaptive.without_seed(PARSE([*(f"{k}={v}" for k, v in s.params.items()), *argv]), argv)
    assert replaced == "seed=0,1,2"
    return s, adaptive.star_plan(s.design_jobs(overrides))


def test_seeds_null_runs_todays_jobs():
    for argv in (["sign=approx,ste", "seed=0,1,2"], ["seed=0,1", "weight=plain,magnitude_aware", "epochs=2"], []):
        g = grid_sweeper.GridSweeper(max_batch_size=None)
        assert g.settings["seeds"] is None
        assert g.split_arguments(PARSE(argv), None) == BasicSweeper.split_arguments(PARSE(argv), None)
        assert g.split_arguments(PARSE(argv), 2) == BasicSweeper.split_arguments(PARSE(argv), 2)
    node = ConfigStore.instance().load("hydra/sweeper/grid.yaml").node
    assert node._target_ == "hydra_plugins.onebit_sweeper.grid_sweeper.GridSweeper" and node.seeds is None
    assert set(node) == {"_target_", "max_batch_size", "params", *adaptive.FIELDS}
    assert adaptive.design({"seeds": None}) is None


def test_one_factor_first_look_and_an_extension():
    s, plan = star()
    one_seed = [BASE, with_(BASE, shortcut="false"), with_(BASE, sign="ste"), with_(BASE, weight="plain"),
                with_(BASE, pretrain="relu")]
    assert plan.cells == one_seed
    assert list(plan.comparisons) == ["shortcut=false vs base", "sign=ste vs base", "weight=plain vs base",
                                      "pretrain=relu vs base"]
    # the first look: the whole design on seeds 0 .. initial_seeds - 1, each job tagged with the design
    plan.extra = ["++sequential={looks:[3,5]}"]
    first = plan.jobs(range(3), range(len(plan.cells)))
    assert first == [[*o, f"seed={k}", "++sequential={looks:[3,5]}"] for k in range(3) for o in one_seed]
    # the same jobs as the fixed design's seeds 0, 1, 2 (but for the design's tag)
    assert [j[:-1] for j in first] == s.job_overrides(PARSE([f"{k}={v}" for k, v in s.params.items()]))
    # ApproxSign vs STE still open: seeds 3, 4 for its two cells only, the base shared
    open_ = plan.cells_of(["sign=ste vs base"])
    assert open_ == [0, 2]
    assert [j[:-1] for j in plan.jobs(range(3, 5), open_)] == [
        [*BASE, "seed=3"], [*with_(BASE, sign="ste"), "seed=3"],
        [*BASE, "seed=4"], [*with_(BASE, sign="ste"), "seed=4"]]
    assert plan.cells_of(["sign=ste vs base", "pretrain=relu vs base"]) == [0, 2, 4]
    # the command line's sweep of another key is crossed: each comparison pairs over both data sets
    _, plan = star(["data=digits,fashion_mnist"])
    assert len(plan.cells) == 10 and plan.comparisons["sign=ste vs base"] == [(2, 0), (7, 5)]


def test_grid_first_look_and_an_extension():
    overrides, replaced = adaptive.without_seed(PARSE(["seed=0,1,2", "sign=approx,ste,swish", "weight=plain,xnor",
                                                       "epochs=2"]), [])
    assert replaced == "seed=0,1,2"
    plan = adaptive.grid_plan(overrides)
    assert plan.cells == [[f"sign={s}", f"weight={w}", "epochs=2"] for s in ("approx", "ste", "swish")
                          for w in ("plain", "xnor")]
    assert plan.comparisons == {"sign=ste vs sign=approx": [(2, 0), (3, 1)],
                                "sign=swish vs sign=approx": [(4, 0), (5, 1)],
                                "weight=xnor vs weight=plain": [(1, 0), (3, 2), (5, 4)]}
    assert plan.jobs(range(2), range(6))[:3] == [[*plan.cells[0], "seed=0"], [*plan.cells[1], "seed=0"],
                                                 [*plan.cells[2], "seed=0"]]
    # swish vs approx still open: its 4 cells (both weights), not ste's
    assert plan.cells_of(["sign=swish vs sign=approx"]) == [0, 1, 4, 5]
    # one seed's difference averages over the other key; a failed cell takes that seed from its comparisons only
    values = {(i, k): 0.5 + 0.01 * i + 0.001 * k for i in range(6) for k in range(2)}
    values[(5, 1)] = None
    diffs = plan.diffs(values)
    assert diffs["sign=ste vs sign=approx"] == {0: [pytest.approx(2.0), pytest.approx(2.0)],
                                                1: [pytest.approx(2.0), pytest.approx(2.0)]}
    assert set(diffs["sign=swish vs sign=approx"]) == {0} and set(diffs["weight=xnor vs weight=plain"]) == {0}


def test_design_of_records(tmp_path):
    from test_results import make_record

    a = make_record(tmp_path, "a", sequential=S.Design(2, 1, 3).as_config())
    b = make_record(tmp_path, "b", seed=1, sequential={**S.Design(2, 1, 3).as_config(), "max_runs": 12})
    fixed = make_record(tmp_path, "c", seed=2)
    assert S.design_of([a, b, fixed]) == S.Design(2, 1, 3) and S.design_of([fixed]) is None
    other = make_record(tmp_path, "d", seed=3, sequential=S.Design(2, 1, 4).as_config())
    with pytest.raises(ValueError, match="the runs state different sequential designs"):
        S.design_of([a, other])


# ----------------------------------------------------------------------------------------------------------
# Real multiruns on tiny digits
# ----------------------------------------------------------------------------------------------------------

# Bi-Real's conclusions, one factor (ApproxSign vs STE): 2 cells x 2 seeds, then seed 2 if undecided
ARGS = ["-m", "sweeps=bireal_conclusions", "~hydra.sweeper.factors.shortcut", "~hydra.sweeper.factors.weight",
        "~hydra.sweeper.factors.pretrain", "hydra.sweeper.seeds=auto", "hydra.sweeper.initial_seeds=2",
        "hydra.sweeper.max_seeds=3", *TINY_FULL]
SMALL = S.Design(2, 2, 3)
LOOK = re.compile(r"^onebit: seeds=auto look (\d) of 2 \((\d) seeds, level (\S+)\): sign=ste vs base ([+-]\d+\.\d\d) "
                  r"points \((\d) pairs\), p=(\S+), Holm-adjusted (\S+): (supported|contradicted|inconclusive)",
                  re.MULTILINE)


def records(root: Path):
    """{(sign, seed): record} of the finished runs under ``root``."""
    out = {}
    for path in root.rglob(RECORD_NAME):
        rec = read_record(path)
        assert rec.status == "finished"
        out[(rec.options["sign"], rec.options["seed"])] = rec
    return out


def expected(recs) -> S.Decision:
    """The decision of sign=ste vs base recomputed from the records, as a table would."""
    diffs = {k: 100 * (recs[("ste", k)].final_stage.metrics["test/top1"]
                       - recs[("approx", k)].final_stage.metrics["test/top1"])
             for k in range(3) if ("ste", k) in recs and ("approx", k) in recs}
    design = S.design_of(recs.values())
    return S.decide({"sign=ste vs base": diffs}, design.looks(), design.alpha)["sign=ste vs base"]


def check_run(root: Path, out: str) -> S.Decision:
    """The look lines, and the records they came from: look 1's 4 jobs, and seed 2 for both cells iff undecided."""
    recs = records(root)
    dec = expected(recs)
    looks = LOOK.findall(out)
    assert looks[0][:3] == ("1", "2", f"{SMALL.levels()[0]:.3g}") and looks[0][4] == "2"
    assert looks[-1][-1] == dec.verdict and float(looks[-1][3]) == pytest.approx(dec.mean, abs=0.006)
    assert float(looks[-1][6]) == pytest.approx(dec.p_adj, rel=1e-2)
    if dec.look == 1 and dec.decided:
        assert set(recs) == {(s, k) for s in ("approx", "ste") for k in (0, 1)} and len(looks) == 1
        assert "every comparison is decided" in out
    else:
        assert set(recs) == {(s, k) for s in ("approx", "ste") for k in (0, 1, 2)} and len(looks) == 2
        assert "onebit: seeds=auto look 1: sign=ste vs base inconclusive (Holm-adjusted p " in out
        assert "adding seed(s) 2 to its 2 cells" in out
    for rec in recs.values():   # the design in the record, outside the job's identity
        assert rec.config["sequential"] == SMALL.as_config() and rec.study == "bireal_conclusions"
    return dec


@pytest.mark.slow  # a real multirun of 6 tiny jobs, then a re-run
def test_real_one_factor_sweep_and_a_rerun_that_trains_nothing(tmp_path):
    r = run_train([*ARGS, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onebit: seeds=auto: seed=0,1,2 (params) is replaced by the seeds chosen by the data" in r.stdout
    assert "looks at 2, 3 seeds" in r.stdout and "1 comparison(s) on test/top1: sign=ste vs base" in r.stdout
    dec = check_run(tmp_path, r.stdout)
    n = len(records(tmp_path))
    assert f"onebit sweep: {n} finished, 0 failed" in r.stdout
    # a job of the adaptive sweep is the job of the fixed design (the same key): the design is not its identity
    rec = records(tmp_path)[("ste", 1)]
    fixed = compose_cfg(["sweeps=bireal_conclusions", "sign=ste", "seed=1", *TINY_FULL], tmp_path)
    assert job_key(OmegaConf.to_container(fixed, resolve=True)) == rec.job_key
    # the same command again: every job skipped, the same decisions, no new record
    again = run_train([*ARGS, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"onebit sweep: {n} finished ({n} skipped: finished before), 0 failed" in again.stdout
    assert LOOK.findall(again.stdout) == LOOK.findall(r.stdout) and len(records(tmp_path)) == n
    assert check_run(tmp_path, again.stdout) == dec


@pytest.mark.slow  # a real process killed between two looks, then the same command again
def test_a_sweep_killed_between_looks_resumes_without_training_twice(tmp_path):
    killed = run_train([*ARGS, f"output_root={tmp_path}"], env={"ONEBIT_KILL_AT": "seeds_look:2"})
    first = LOOK.findall(killed.stdout)
    assert len(first) == 1 and first[0][-1] == INCONCLUSIVE, killed.stdout[-3000:]   # look 2 was due: killed there
    assert killed.returncode == -signal.SIGKILL
    assert set(records(tmp_path)) == {(s, k) for s in ("approx", "ste") for k in (0, 1)}
    done = {p: p.stat().st_mtime_ns for p in tmp_path.rglob(RECORD_NAME)}
    resumed = run_train([*ARGS, f"output_root={tmp_path}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert LOOK.findall(resumed.stdout)[0] == first[0]   # look 1 recomputed from the records
    assert resumed.stdout.count("onebit: skipped: this job finished before") == 4
    assert "onebit sweep: 6 finished (4 skipped: finished before), 0 failed" in resumed.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())   # never trained twice
    check_run(tmp_path, resumed.stdout)


@pytest.mark.slow  # a real multirun: 2 tiny jobs and 2 refused ones
def test_a_failed_job_is_named_and_gives_no_pair(tmp_path):
    r = run_train(["-m", "epochs=1,0", "hydra.sweeper.seeds=auto", "hydra.sweeper.initial_seeds=2",
                   "hydra.sweeper.max_seeds=2", "pretrain=none", "model.width=4", "logger=none", "threads=1",
                   f"output_root={tmp_path}"])
    assert r.returncode == 1   # the sweep's summary: 2 jobs refused
    for job, seed in ((1, 0), (3, 1)):
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"onebit: seeds=auto: job {job} (epochs=0 "))
        assert f"seed={seed}) refused: " in line and "epochs=0 is invalid" in line
        assert line.endswith(f"; seed {seed} gives no pair to epochs=0 vs epochs=1")
    assert ("onebit: seeds=auto look 1 of 1 (2 seeds, level 0.05): epochs=0 vs epochs=1: no pairs yet: inconclusive"
            in r.stdout)
    assert "stopped after look 1 of 1 (2 seeds = hydra.sweeper.max_seeds): 1 comparison(s) inconclusive" in r.stdout
    assert "onebit sweep: 2 finished, 2 failed" in r.stdout


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, no job
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, line", [
    (["sweeps=bireal_conclusions", "hydra.sweeper.seeds=bogus"],
     "hydra.sweeper.seeds=bogus is invalid: choose auto (seeds chosen by the data) or null (the sweep's own seeds)"),
    (["sweeps=bireal_conclusions", "hydra.sweeper.seeds=auto", "hydra.sweeper.max_seeds=2"],
     "hydra.sweeper.max_seeds=2 is invalid: must be an integer >= initial_seeds=3"),
    (["sign=approx,ste", "hydra.sweeper.seeds=auto", "hydra.sweeper.initial_seeds=1"],
     "hydra.sweeper.initial_seeds=1 is invalid: must be an integer >= 2 (a paired t-test needs two pairs)"),
    (["sign=approx,ste", "hydra.sweeper.seeds=auto", "hydra.sweeper.alpha=1.5"],
     "hydra.sweeper.alpha=1.5 is invalid: must be a number in (0, 1)"),
    (["sign=approx,ste", "hydra.sweeper.seeds=auto", "hydra.sweeper.metric=val/loss"],
     ("hydra.sweeper.metric='val/loss' is invalid: choose one of test/top1, test/top5, val/top1, val/top1_best, "
      "val/top5, train/top1")),
    (["sign=approx,ste", "hydra.sweeper.seeds=auto", "seed=0,1"],
     ("seed=0,1 is refused with hydra.sweeper.seeds=auto: the sweeper chooses the seeds (0, 1, 2, ...); set "
      "hydra.sweeper.initial_seeds / seed_step / max_seeds instead")),
    (["sign=approx,ste", "hydra.sweeper.seeds=auto", "hydra.sweeper.max_runs=5"],
     "hydra.sweeper.max_runs=5 is invalid: the first look alone runs 6 jobs (2 cells x 3 seeds)"),
    (["epochs=1", "hydra.sweeper.seeds=auto"],
     "hydra.sweeper.seeds=auto needs a comparison: sweep at least one key besides seed (e.g. sign=approx,ste)"),
])
def test_bad_input_is_one_line_before_any_job(tmp_path, argv, line):
    r = run_train(["-m", *argv, f"output_root={tmp_path}"])
    assert r.returncode == 1 and line in r.stderr.splitlines(), r.stderr[-2000:]
    assert not list(tmp_path.rglob("job.json")) and not list(tmp_path.rglob(RECORD_NAME))



# ----------------------------------------------------------------------------------------------------------
# The tables of a seeds=auto sweep: the sequential rule's verdicts, stated under the table
# ----------------------------------------------------------------------------------------------------------


def test_tables_of_an_adaptive_sweep_use_the_sequential_rule_and_state_it(tmp_path):
    """Records of a one-factor star whose runs carry ``config.sequential`` (looks at 3, 4, 5 seeds): the
    conclusions table's verdicts are ``sequential.decide``'s, not the fixed-sample Holm test's: "clip > ReLU init"
    (p = 0.011 on 5 pairs) would be supported by the fixed test but stays inconclusive under the sequential levels;
    the shortcut, decided at the first look, is supported; the notes state the design and each look."""
    from test_results import make_record

    from onebit.cli.tables import main as tables
    from onebit.results import bireal
    from onebit.results.load import load_records

    design = S.Design(initial_seeds=3, seed_step=1, max_seeds=5)
    node = design.as_config()
    base = 0.80
    clip = [1.0, 2.1, 0.4, 1.6, 1.2]            # clip - relu (points)
    sign = [0.3, -0.5, 0.2, -0.1, 0.4]          # approx - ste
    weight = [-0.2, 0.6, 0.1, -0.4, 0.3]        # magnitude_aware - plain
    short = [20.0, 21.0, 19.5, 20.5, 20.2]      # bireal - plain
    for s in range(5):
        kw = dict(seed=s, study="auto", sequential=node)
        make_record(tmp_path, f"base{s}", top1=base, **kw)
        make_record(tmp_path, f"relu{s}", pretrain="relu", top1=base - clip[s] / 100, **kw)
        make_record(tmp_path, f"ste{s}", sign="ste", top1=base - sign[s] / 100, **kw)
        make_record(tmp_path, f"plainw{s}", weight="plain", top1=base - weight[s] / 100, **kw)
        make_record(tmp_path, f"plain{s}", structure="plain", top1=base - short[s] / 100, **kw)
    records, problems = load_records(tmp_path)
    assert problems == []
    c = bireal.conclusions(records).set_index("conclusion")
    decided = S.decide({"shortcut > none": dict(enumerate(short)), "ApproxSign > STE": dict(enumerate(sign)),
                        "magnitude-aware > plain": dict(enumerate(weight)), "clip > ReLU init": dict(enumerate(clip))},
                       design.looks())
    assert {k: d.verdict for k, d in decided.items()} == c["verdict"].to_dict()
    assert c.loc["shortcut > none", "verdict"] == SUPPORTED and decided["shortcut > none"].look == 1
    assert c.loc["clip > ReLU init", "verdict"] == INCONCLUSIVE
    fixed = holm([paired_p(d) for d in (short, sign, weight, clip)])
    assert fixed[3] < ALPHA   # the fixed-sample test would have called it supported
    notes = c.attrs["notes"]
    assert notes[0].startswith("seeds chosen by the data: looks at 3, 4, 5 seeds")
    assert any(n.startswith("shortcut > none: supported at look 1 (3 pairs") for n in notes)
    assert any(n.startswith("clip > ReLU init: still open after look 3 (5 pairs") for n in notes)
    assert not any("excludes 0" in n for n in notes)   # that note is about the fixed design's Holm
    r = run_cli_tables(tables, tmp_path)
    assert "seeds chosen by the data" in r.stdout and "Lan-DeMets" in r.stdout


def run_cli_tables(tables, root):
    from conftest import run_cli

    r = run_cli(tables, ["table1", "--root", root])
    assert r.returncode == 0, r.stderr
    return r


def test_tables_refuse_runs_of_two_sequential_designs_in_one_line(tmp_path):
    from conftest import run_cli
    from test_results import make_record

    from onebit.cli.tables import main as tables

    for s in range(3):
        make_record(tmp_path, f"a{s}", seed=s, study="auto", sequential=S.Design(3, 1, 5).as_config())
        make_record(tmp_path, f"b{s}", seed=s, sign="ste", study="auto", sequential=S.Design(3, 1, 6).as_config())
    r = run_cli(tables, ["table1", "--root", tmp_path])
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("onebit: error: the runs state different sequential designs") and "(3, 4, 5)" in r.stderr
