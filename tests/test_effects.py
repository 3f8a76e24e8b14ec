"""Effects and interactions (``onebit.results.effects``, ``tables.py effects``): a planted interaction in a 2x2x2
factorial is found with the right size and the absent ones are not, main effects equal the data's marginal means,
the family-wise rate of false interactions stays at 5 % over simulated tables, designs that are not full factorials
print what they can estimate and why not more (a one-factor-at-a-time star crossed with a factor: the crossed
factor's interactions, as in the committed example), and the command line prints the table and writes the PNG.
Records are written by ``test_results.make_record`` (real schema-2 records that ``load_records`` reads)."""

from __future__ import annotations

import gc
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_cli
from scipy import stats as sps
from test_results import make_record

from onebit.cli.tables import main as tables
from onebit.results import effects
from onebit.results.load import load_records
from onebit.results.select import select

SIGN, WEIGHT, STRUCTURE = ("ste", "approx"), ("plain", "magnitude_aware"), ("plain", "bireal")
PLANTED = "sign (approx vs ste) x weight (magnitude_aware vs plain)"


def simulate(rng, seeds: int = 6, interaction: float = 8.0) -> pd.DataFrame:
    """A 2x2x2 factorial (structure x sign x weight) x seeds in points: 80 + 5 (bireal) + 3 (approx) + 2
    (magnitude_aware) + ``interaction`` when both approx and magnitude_aware (weight's effect is 2 + 8 with
    approx, 2 with ste) + a seed block 0.5 s + N(0, 1)."""
    rows = []
    for s in range(seeds):
        for st, sign, w in itertools.product(STRUCTURE, SIGN, WEIGHT):
            y = (80 + 5 * (st == "bireal") + 3 * (sign == "approx") + 2 * (w == "magnitude_aware")
                 + interaction * (sign == "approx") * (w == "magnitude_aware") + 0.5 * s + rng.normal(0, 1))
            rows.append({"structure": st, "sign": sign, "weight": w, "seed": s, "y": y})
    return pd.DataFrame(rows)


def write(root, data: pd.DataFrame, study: str = "grid", **fixed) -> None:
    for i, r in data.iterrows():
        options = {k: r[k] for k in ("structure", "sign", "weight", "pretrain") if k in data.columns}
        make_record(root, f"run{i}", study=study, seed=int(r["seed"]), top1=r["y"] / 100, **options, **fixed)


def selection(root, study: str | None = None):
    records, _ = load_records(root)
    return select(records, study)[0]


def row(eff, name: str) -> dict:
    found = eff.frame[eff.frame["effect"] == name]
    assert len(found) == 1, (name, list(eff.frame["effect"]))
    return found.iloc[0].to_dict()


# ----------------------------------------------------------------------------------------------------------
# 1. A full factorial with a planted interaction
# ----------------------------------------------------------------------------------------------------------


def test_planted_interaction_is_found_and_main_effects_are_the_marginal_means(tmp_path):
    data = simulate(np.random.default_rng(1))
    write(tmp_path, data)
    eff = effects.effects(selection(tmp_path))
    assert eff.design == effects.FACTORIAL and eff.factors == ["structure", "sign", "weight"]
    assert eff.levels == {"structure": ["plain", "bireal"], "sign": ["ste", "approx"],
                          "weight": ["plain", "magnitude_aware"]}   # the paper's worse option is the reference
    assert len(eff.frame) == 6 and eff.result.df_resid == 48 - 12   # 1 + 3 main + 3 two-way + 5 blocks
    planted = row(eff, PLANTED)
    assert planted["kind"] == "interaction" and planted["verdict"] == "positive"
    assert planted["low"] <= 8.0 <= planted["high"] and abs(planted["estimate"] - 8.0) < 1.5
    for name in ("structure (bireal vs plain) x sign (approx vs ste)",
                 "structure (bireal vs plain) x weight (magnitude_aware vs plain)"):
        assert row(eff, name)["verdict"] == "inconclusive", row(eff, name)
    # balanced: a main effect is the difference of the data's marginal means, averaged over everything else
    for factor, (ref, level) in (("structure", STRUCTURE), ("sign", SIGN), ("weight", WEIGHT)):
        r = row(eff, f"{factor}: {level} vs {ref}")
        expected = data.loc[data[factor] == level, "y"].mean() - data.loc[data[factor] == ref, "y"].mean()
        assert r["estimate"] == pytest.approx(expected, abs=1e-9) and r["verdict"] == "positive"
    # the interaction is the difference of differences of the data's cell means (averaged over structure)
    m = data.groupby(["sign", "weight"])["y"].mean()
    dd = m["approx", "magnitude_aware"] - m["ste", "magnitude_aware"] - m["approx", "plain"] + m["ste", "plain"]
    assert planted["estimate"] == pytest.approx(dd, abs=1e-9)
    # Holm across the 6 effects of the fit: each adjusted p is at least the raw one, and the largest raw p's
    # adjusted value is the largest adjusted value
    assert (eff.frame["p_holm"] >= eff.frame["p"] - 1e-15).all()
    # the plot's means: sign x weight cell means averaged over structure and the seeds
    means = eff.means(["sign", "weight"]).set_index(["sign", "weight"])["mean"]
    assert means["approx", "magnitude_aware"] == pytest.approx(m["approx", "magnitude_aware"], abs=1e-9)
    anova = eff.tables()[1].frame.set_index("term")
    assert anova.loc["sign x weight", "p"] == "<0.001" and anova.loc["structure x sign", "p"] != "<0.001"
    assert anova.loc["residual", "df"] == 36


def test_effects_command_prints_the_table_and_writes_the_interaction_plot(tmp_path):
    write(tmp_path / "runs", simulate(np.random.default_rng(1)))
    out = tmp_path / "out"
    r = run_cli(tables, ["effects", "--root", tmp_path / "runs", "--out", out])
    assert r.returncode == 0, r.stderr
    text = (out / "effects-grid.txt").read_text()
    assert "p Holm-adjusted across the 6 effects of this fit" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(PLANTED))
    assert line.split()[-1] == "positive" and "interaction" in line
    png = out / "effects-grid.png"
    assert f"onebit: wrote {png}" in r.stderr
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without --out the figure goes to <root>/figures; every format prints
    for fmt, marker in (("text", "== Effects and interactions"), ("markdown", "### Effects and interactions"),
                        ("csv", "table,effect,kind"), ("latex", "\\toprule")):
        r = run_cli(tables, ["effects", "--root", tmp_path / "runs", "--study", "grid", "--format", fmt])
        assert r.returncode == 0 and marker in r.stdout, (fmt, r.stdout[:500], r.stderr)
    assert (tmp_path / "runs" / "figures" / "effects-grid.png").read_bytes()[:4] == b"\x89PNG"


def test_effects_command_names_a_bad_study_in_one_line(tmp_path):
    write(tmp_path, simulate(np.random.default_rng(1), seeds=2))
    r = run_cli(tables, ["effects", "--root", tmp_path, "--study", "nope"])
    assert r.returncode == 1 and r.stderr.strip() == "onebit: error: no runs of study 'nope' (studies: grid)"


# ----------------------------------------------------------------------------------------------------------
# 2. No interaction: the family-wise rate of a false interaction verdict
# ----------------------------------------------------------------------------------------------------------


def test_false_interaction_verdicts_stay_within_the_family_wise_rate():
    rng = np.random.default_rng(2024)
    n, false, mains = 200, 0, 0
    gc.collect()
    gc.freeze()   # statsmodels' Holm runs gc.collect() on every call: keep the test's own objects out of it
    try:
        for _ in range(n):
            eff = effects.fit(simulate(rng, interaction=0.0), ["structure", "sign", "weight"],
                              {"structure": list(STRUCTURE), "sign": list(SIGN), "weight": list(WEIGHT)})
            verdicts = eff.frame.set_index("kind")["verdict"]
            false += any(v != "inconclusive" for v in verdicts["interaction"])
            mains += all(v == "positive" for v in verdicts["main"])
    finally:
        gc.unfreeze()
    tolerance = 2.33 * math.sqrt(0.05 * 0.95 / n)   # one-sided 99 % binomial margin
    assert false / n <= 0.05 + tolerance, false
    assert mains == n   # the planted main effects (2 to 5 points, noise sd 1) are found every time


# ----------------------------------------------------------------------------------------------------------
# 3. Designs that are not full factorials
# ----------------------------------------------------------------------------------------------------------


def test_one_factor_at_a_time_star_gives_each_factor_vs_the_base(tmp_path):
    """sweeps=bireal_conclusions: the base (bireal, approx, magnitude_aware, clip) and each of the four changed."""
    base = {"structure": "bireal", "sign": "approx", "weight": "magnitude_aware", "pretrain": "clip"}
    changed = {"structure": "plain", "sign": "ste", "weight": "plain", "pretrain": "relu"}
    cost = {"structure": 6.0, "sign": 4.0, "weight": 3.0, "pretrain": 2.0}
    rng = np.random.default_rng(5)
    rows = [{**base, "seed": s, "y": 90 + s + rng.normal(0, 0.3)} for s in range(3)]
    rows += [{**base, k: v, "seed": s, "y": 90 - cost[k] + s + rng.normal(0, 0.3)}
             for k, v in changed.items() for s in range(3)]
    data = pd.DataFrame(rows)
    write(tmp_path, data, study="bireal_conclusions")
    eff = effects.effects(selection(tmp_path))
    assert eff.design == effects.STAR and set(eff.frame["kind"]) == {"main"}
    assert any(n.startswith("interactions not estimable: one factor at a time, no two factors vary together")
               for n in eff.notes), eff.notes
    cell = data.assign(key=data[list(base)].astype(str).agg("/".join, axis=1)).groupby("key")["y"].mean()
    for k, worse in changed.items():
        better = base[k]
        r = row(eff, f"{k}: {better} vs {worse}")   # oriented as the paper: better minus worse
        other = "/".join(str({**base, k: worse}[f]) for f in base)
        assert r["estimate"] == pytest.approx(cell["/".join(base.values())] - cell[other], abs=1e-9)
        assert r["verdict"] == "positive" and r["low"] <= cost[k] <= r["high"]
    r = run_cli(tables, ["effects", "--root", tmp_path])
    assert r.returncode == 0 and "interactions not estimable: one factor at a time" in r.stdout


def test_single_factor_is_the_paired_comparison(tmp_path):
    rng = np.random.default_rng(3)
    ste, approx = 80 + rng.normal(0, 1, 4), 81.5 + rng.normal(0, 1, 4)
    data = pd.DataFrame([{"sign": s, "seed": i, "y": v} for s, ys in (("ste", ste), ("approx", approx))
                         for i, v in enumerate(ys)])
    write(tmp_path, data)
    eff = effects.effects(selection(tmp_path))
    assert eff.design == effects.SINGLE and "no interaction: only one factor varies" in eff.notes
    r = row(eff, "sign: approx vs ste")
    paired = sps.ttest_rel(approx, ste)   # the seed block makes it the paired t-test
    assert r["estimate"] == pytest.approx(float(np.mean(approx - ste)), abs=1e-9)
    assert r["p"] == pytest.approx(paired.pvalue, rel=1e-9) and r["p_holm"] == pytest.approx(r["p"])
    out = run_cli(tables, ["effects", "--root", tmp_path, "--format", "markdown"])
    assert out.returncode == 0 and "no interaction: only one factor varies" in out.stdout


def test_incomplete_grid_names_the_missing_combination_and_fits_main_effects(tmp_path):
    rng = np.random.default_rng(4)
    up = {"plain": 0.0, "res": 3.0, "bireal": 5.0}
    rows = [{"structure": st, "sign": sg, "seed": s, "y": 80 + up[st] + 2 * (sg == "approx") + rng.normal(0, 1)}
            for st, sg in itertools.product(up, SIGN) if (st, sg) != ("plain", "approx") for s in range(4)]
    write(tmp_path, pd.DataFrame(rows))
    eff = effects.effects(selection(tmp_path))
    assert eff.design == effects.INCOMPLETE and set(eff.frame["kind"]) == {"main"}
    assert ("not a full grid (no runs of structure=plain, sign=approx): main effects only, an additive model"
            in eff.notes), eff.notes
    assert list(eff.frame["effect"]) == ["structure: bireal vs plain", "structure: res vs plain",
                                         "sign: approx vs ste"]
    assert eff.pairs == [] and eff.notes[2] == ("interactions not estimable (a two-way term enters only when its "
                                                "columns raise the design matrix's rank by their number): structure "
                                                "x sign (no runs of structure=plain with sign=approx)"), eff.notes
    assert all(r.low <= truth <= r.high for r, truth in zip(eff.frame.itertuples(), (5.0, 3.0, 2.0)))


def test_incomplete_blocks_are_left_out_and_one_block_gives_no_interval(tmp_path):
    rows = [{"sign": sg, "weight": w, "seed": s, "y": 80.0 + 2 * (sg == "approx") + 0.1 * s + (w == "plain")}
            for sg, w in itertools.product(SIGN, WEIGHT) for s in (0, 1)]
    rows = [r for r in rows if r["seed"] == 0 or (r["sign"], r["weight"]) == ("approx", "plain")]
    write(tmp_path, pd.DataFrame(rows))
    eff = effects.effects(selection(tmp_path))
    assert "left out 1 run(s) of seed(s) 1: not in every cell (only complete blocks enter)" in eff.notes
    assert "no interval and no p: fewer than 2 complete blocks (1); estimates only" in eff.notes
    assert row(eff, "sign: approx vs ste")["estimate"] == pytest.approx(2.0, abs=1e-9)
    assert eff.frame["low"].isna().all() and set(eff.frame["verdict"]) == {"inconclusive"}
    r = run_cli(tables, ["effects", "--root", tmp_path])
    assert r.returncode == 0 and "fewer than 2 complete blocks" in r.stdout, r.stderr


def test_reference_level_is_the_papers_worse_option_else_the_natural_order():
    assert effects.order_levels("sign", ["approx", "ste"]) == (["ste", "approx"], True)
    assert effects.order_levels("structure", ["bireal", "res", "plain"]) == (["plain", "bireal", "res"], True)
    assert effects.order_levels("weight", ["plain", "xnor"]) == (["xnor", "plain"], True)   # Bethge: scaling hurts
    assert effects.order_levels("model.downsample", ["full_precision", "binary"])[0] == ["binary", "full_precision"]
    assert effects.order_levels("depth", ["34", "18", "50"]) == (["18", "34", "50"], False)


def test_confounded_factors_and_a_single_cell_estimate_nothing_and_say_why():
    # b and c change together in every cell: the main-effects design matrix is rank-deficient
    cells = [("a0", "b0", "c0"), ("a1", "b1", "c1"), ("a0", "b1", "c1")]
    data = pd.DataFrame([{"a": a, "b": b, "c": c, "seed": s, "y": 80.0 + s + (a == "a1")} for a, b, c in cells
                         for s in range(3)])
    eff = effects.fit(data, ["a", "b", "c"])
    assert eff.result is None and set(eff.frame["verdict"]) == {"not estimable"} and len(eff.frame) == 3
    assert eff.notes[-1] == ("nothing estimable: the main-effects design matrix has rank 5 < 6 parameters (some "
                             "factors change together in every run)"), eff.notes
    one = effects.fit(data.assign(a="a0", b="b0", c="c0"), [])
    assert one.notes == ["nothing to estimate: a single cell, no factor varies"] and one.result is None


# ----------------------------------------------------------------------------------------------------------
# 4. A one-factor-at-a-time star crossed with a factor: the crossed factor's interactions are estimable
# ----------------------------------------------------------------------------------------------------------

STAR_BASE = {"structure": "bireal", "sign": "approx", "weight": "magnitude_aware"}
STAR_CHANGED = {"structure": "plain", "sign": "ste", "weight": "plain"}
STAR_PAIRS_NOTE = ("interactions not estimable (a two-way term enters only when its columns raise the design matrix's "
                   "rank by their number): structure x sign, structure x weight, sign x weight (no two of their "
                   "levels vary together in the runs: every run has one of each pair at its base: structure=bireal, "
                   "sign=approx, weight=magnitude_aware)")


def star_crossed(rng, seeds: int = 4, planted: float = 6.0) -> pd.DataFrame:
    """The star (base bireal / approx / magnitude_aware, each changed alone) x optimizer (adam, sgd) x seeds:
    80 - 5 (plain structure) - 3 (ste) - 2 (plain weight) - 4 (sgd) + ``planted`` when sgd and approx (sign's
    effect is 3 + 6 with sgd, 3 with adam; no other interaction) + a seed block 0.5 s + N(0, 1)."""
    cells = [STAR_BASE] + [{**STAR_BASE, k: v} for k, v in STAR_CHANGED.items()]
    rows = []
    for s, cell, opt in itertools.product(range(seeds), cells, ("adam", "sgd")):
        y = (80 - 5 * (cell["structure"] == "plain") - 3 * (cell["sign"] == "ste") - 2 * (cell["weight"] == "plain")
             - 4 * (opt == "sgd") + planted * (opt == "sgd") * (cell["sign"] == "approx") + 0.5 * s
             + rng.normal(0, 1))
        rows.append({**cell, "optimizer": opt, "seed": s, "y": y})
    return pd.DataFrame(rows)


def fit_ordered(data: pd.DataFrame, factors: list) -> effects.Effects:
    """:func:`effects.fit` with the levels ordered as :func:`effects.effects` orders them."""
    ordered = {f: effects.order_levels(f, data[f].unique()) for f in factors}
    return effects.fit(data, factors, {f: lv for f, (lv, _) in ordered.items()},
                       [f for f, (_, oriented) in ordered.items() if oriented])


def test_star_crossed_with_a_factor_finds_its_planted_interaction_and_names_the_star_pairs():
    data = star_crossed(np.random.default_rng(11))
    eff = fit_ordered(data, ["structure", "sign", "weight", "optimizer"])
    assert eff.design == effects.STAR_CROSSED
    assert eff.pairs == [("structure", "optimizer"), ("sign", "optimizer"), ("weight", "optimizer")]
    assert list(eff.frame["kind"]) == ["main"] * 4 + ["interaction"] * 3
    assert eff.result.df_resid == 32 - (1 + 4 + 3 + 3)   # 8 cells x 4 seeds; mu, 4 main, 3 two-way, 3 blocks
    assert STAR_PAIRS_NOTE in eff.notes, eff.notes
    assert ("one factor at a time in structure, sign, weight (base: structure=bireal, sign=approx, "
            "weight=magnitude_aware), crossed with every level of optimizer: main effects and the 3 estimable "
            "two-way interaction(s)") in eff.notes
    m = data.groupby(["structure", "sign", "weight", "optimizer"])["y"].mean()
    base = tuple(STAR_BASE.values())
    ste = ("bireal", "ste", "magnitude_aware")
    planted = row(eff, "sign (approx vs ste) x optimizer (sgd vs adam)")
    assert planted["verdict"] == "positive" and planted["low"] <= 6.0 <= planted["high"], planted
    # read at the base, where the four cells are runs: the difference of differences of their means
    dd = m[(*base, "sgd")] - m[(*ste, "sgd")] - m[(*base, "adam")] + m[(*ste, "adam")]
    assert planted["estimate"] == pytest.approx(dd, abs=1e-9)
    for name in ("structure (bireal vs plain) x optimizer (sgd vs adam)",
                 "weight (magnitude_aware vs plain) x optimizer (sgd vs adam)"):
        assert row(eff, name)["verdict"] == "inconclusive", row(eff, name)
    # main effects over the settings that were run: sign at the base, averaged over both optimizers (3 + 6 / 2);
    # the optimizer over the four star cells (-4 + 6 x 3/4: approx in three of them)
    sign = row(eff, "sign: approx vs ste")
    assert sign["estimate"] == pytest.approx(np.mean([m[(*base, o)] - m[(*ste, o)] for o in ("adam", "sgd")]),
                                             abs=1e-9)
    assert sign["low"] <= 6.0 <= sign["high"]
    cells = {c[:3] for c in m.index}
    optimizer = row(eff, "optimizer: sgd vs adam")
    assert optimizer["estimate"] == pytest.approx(np.mean([m[(*c, "sgd")] - m[(*c, "adam")] for c in cells]),
                                                  abs=1e-9)
    assert optimizer["low"] <= 0.5 <= optimizer["high"]


def test_committed_example_reports_the_optimizer_interactions_and_no_star_pair(tmp_path):
    """analysis/example/records: structure / sign / weight / pretrain one at a time x optimizer (sgd, adam)."""
    example = ROOT / "analysis" / "example" / "records"
    sel = selection(example)
    eff = effects.effects(sel)
    assert eff.design == effects.STAR_CROSSED and eff.factors == ["structure", "sign", "weight", "pretrain",
                                                                   "optimizer"]
    inter = list(eff.frame.loc[eff.frame["kind"] == "interaction", "effect"])
    assert inter == ["structure (bireal vs plain) x optimizer (sgd vs adam)",
                     "sign (approx vs ste) x optimizer (sgd vs adam)",
                     "weight (magnitude_aware vs plain) x optimizer (sgd vs adam)",
                     "pretrain (clip vs relu) x optimizer (sgd vs adam)"]
    assert not [e for e in eff.frame["effect"] if "sign (" in e and "weight (" in e]
    note = next(n for n in eff.notes if n.startswith("interactions not estimable"))
    assert "sign x weight" in note and "optimizer" not in note, note
    assert eff.result.df_resid == 30 - (1 + 5 + 4 + 2)   # 10 cells x 3 seeds
    # the interaction is the difference of differences of the runs' cell means at the base
    data, factors, _ = effects.design_data(sel.records)
    m = data.groupby(factors)["y"].mean()
    base = ("bireal", "approx", "magnitude_aware", "clip")
    plain = ("plain", "approx", "magnitude_aware", "clip")
    dd = m[(*base, "sgd")] - m[(*plain, "sgd")] - m[(*base, "adam")] + m[(*plain, "adam")]
    assert row(eff, inter[0])["estimate"] == pytest.approx(dd, abs=1e-9)
    r = run_cli(tables, ["effects", "--root", example, "--out", tmp_path])
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "effects-bireal_conclusions.txt").read_text()
    assert "sign (approx vs ste) x optimizer (sgd vs adam) interaction" in text and "not estimable" in text


def test_a_half_fraction_says_its_interactions_are_confounded():
    """A 2^(3-1) fraction (c = a xor b): every pair's four combinations were run, yet each two-way term is
    aliased with the third factor's main effect; a main effect has no setting run at both its levels, so it is
    the additive model's (the same at every setting)."""
    cells = [("0", "0", "0"), ("1", "0", "1"), ("0", "1", "1"), ("1", "1", "0")]
    data = pd.DataFrame([{"a": a, "b": b, "c": c, "seed": s, "y": 80.0 + 0.1 * s + 2 * (a == "1") + (c == "1")}
                         for a, b, c in cells for s in range(3)])
    eff = effects.fit(data, ["a", "b", "c"])
    assert eff.design == effects.INCOMPLETE and eff.pairs == [] and set(eff.frame["kind"]) == {"main"}
    assert eff.notes[2].endswith("a x b, a x c, b x c (every combination of the pair's levels was run, but the term "
                                 "is confounded with the main effects, the seed blocks and the interactions kept "
                                 "before it)"), eff.notes
    assert list(eff.frame["estimate"]) == pytest.approx([2.0, 0.0, 1.0], abs=1e-9)
