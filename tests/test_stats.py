"""The statistics of a verdict (onebit.results.stats), checked by simulation against their promises: the 95 %
t-interval covers the true mean difference 93-97 % of the time (the old mean +- 2 SE band does not, with 3 pairs);
Holm keeps the family-wise false-positive rate of a table at or below alpha (unadjusted tests do not); TOST's
"supported" for an "equal" claim is rare when the true difference sits on the margin; and the power numbers agree
with an independent simulation. Every simulation is seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from onebit.results import paired, stats

SIMS = 4000


def binomial_upper(p: float, n: int, z: float = 3.0) -> float:
    """p + z binomial standard errors: the tolerance of a simulated rate."""
    return p + z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("n,effect", [(3, 0.0), (3, 2.0), (5, 0.5), (10, 0.0)])
def test_t_interval_covers_the_true_difference_95_percent_of_the_time(n, effect):
    rng = np.random.default_rng(1000 + n)
    diffs = rng.normal(effect, 1.5, size=(SIMS, n))
    covered = sum(lo <= effect <= hi for lo, hi in (stats.t_interval(d) for d in diffs))
    assert 0.93 <= covered / SIMS <= 0.97
    if n == 3:  # the old noise band mean +- 2 SE covers about 82 % with 3 pairs: it claimed "exceeds noise" too often
        m, se = diffs.mean(1), diffs.std(1, ddof=1) / math.sqrt(n)
        assert np.mean(np.abs(m - effect) <= 2 * se) < 0.86


def test_t_interval_is_students():
    d = [10.0, 6.0, 3.0]
    ci = scipy.stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert stats.t_interval(d) == pytest.approx((ci.low, ci.high))
    half = scipy.stats.t.ppf(0.975, 2) * np.std(d, ddof=1) / math.sqrt(3)
    assert scipy.stats.t.ppf(0.975, 2) == pytest.approx(4.303, abs=1e-3) and ci.high - np.mean(d) == pytest.approx(half)
    assert all(math.isnan(x) for x in stats.t_interval([1.0]))


def test_bootstrap_interval_only_from_five_pairs_and_is_scipys_bca():
    d = [1.0, 2.5, 0.5, 3.0, 1.5, 2.0]
    assert all(math.isnan(x) for x in stats.bootstrap_interval(d[:4]))
    ref = scipy.stats.bootstrap((np.array(d),), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa",
                                rng=np.random.default_rng(0)).confidence_interval
    assert stats.bootstrap_interval(d) == pytest.approx((ref.low, ref.high))
    assert stats.bootstrap_interval(d) == stats.bootstrap_interval(d)  # the same every time a table is printed


def test_probability_of_improvement_counts_ties_half():
    assert stats.prob_improvement([1.0, -1.0, 0.0, 2.0]) == pytest.approx((2 + 0.5) / 4)
    assert math.isnan(stats.prob_improvement([]))


def test_holm_is_statsmodels_and_keeps_nan_out_of_the_family():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert stats.holm([0.01, math.nan, 0.04]) == pytest.approx([0.02, math.nan, 0.04], nan_ok=True)
    assert stats.holm([0.01, 0.04]) == pytest.approx([0.02, 0.04])  # max(0.02, 1 * 0.04)


def table_verdicts(diffs: np.ndarray) -> tuple[list[str], list[str]]:
    """The verdicts of one simulated conclusions table (one row of pairs per conclusion): Holm-adjusted, and
    each conclusion alone (unadjusted)."""
    cs = [stats.compare(d, bootstrap=False) for d in diffs]
    return [c.verdict for c in stats.family(cs)], [stats.decide(c, c.p) for c in cs]


def test_holm_keeps_the_family_wise_false_positive_rate_at_alpha():
    """2,000 tables of 4 conclusions, 4 pairs each, no true difference anywhere: a table with any verdict other
    than inconclusive is a family-wise false positive."""
    rng = np.random.default_rng(7)
    tables = rng.normal(0.0, 1.0, size=(2000, 4, 4))
    verdicts = [table_verdicts(t) for t in tables]
    fwer = np.mean([any(v != stats.INCONCLUSIVE for v in adjusted) for adjusted, _ in verdicts])
    raw = np.mean([any(v != stats.INCONCLUSIVE for v in alone) for _, alone in verdicts])
    assert fwer <= binomial_upper(stats.ALPHA, len(tables))
    assert raw > 0.15  # unadjusted: 1 - 0.95^4 = 0.185


def test_holm_with_true_effects_beside_the_nulls():
    """Two conclusions with a large true effect, two without: the nulls are rarely decided, the effects mostly."""
    rng = np.random.default_rng(8)
    false, found = 0, 0
    for _ in range(2000):
        t = rng.normal(0.0, 1.0, size=(4, 6)) + np.array([[3.0], [3.0], [0.0], [0.0]])
        v, _ = table_verdicts(t)
        false += any(x != stats.INCONCLUSIVE for x in v[2:])
        found += sum(x == stats.SUPPORTED for x in v[:2])
    assert false / 2000 <= binomial_upper(stats.ALPHA, 2000) and found / 4000 > 0.95


def test_verdict_words_follow_the_side_of_the_interval():
    up, down, flat = stats.family([stats.compare([5.0, 6.0, 5.5]), stats.compare([-5.0, -6.0, -5.5]),
                                   stats.compare([0.5, -0.4, 0.1])])
    assert (up.verdict, down.verdict, flat.verdict) == ("supported", "contradicted", "inconclusive")
    assert up.lo > 0 and down.hi < 0 and flat.lo < 0 < flat.hi
    (one,) = stats.family([stats.compare([9.0])])
    assert one.verdict == "inconclusive" and math.isnan(one.lo)
    assert set(stats.VERDICTS) == {"supported", "contradicted", "inconclusive"}


def test_equivalence_claim_with_a_margin():
    rng = np.random.default_rng(9)
    margin = 1.0
    inside = [stats.family([stats.compare(rng.normal(0.0, 0.5, 12), "equal", margin, False)])[0].verdict for _ in range(200)]
    outside = [stats.family([stats.compare(rng.normal(2.5, 0.5, 12), "equal", margin, False)])[0].verdict for _ in range(200)]
    assert inside.count("supported") / 200 > 0.9 and outside.count("contradicted") / 200 > 0.9
    # a true difference exactly on the margin: "supported" (equivalent) is a false positive, at most alpha
    edge = [stats.family([stats.compare(rng.normal(margin, 0.5, 8), "equal", margin, False)])[0].verdict
            for _ in range(2000)]
    assert edge.count("supported") / 2000 <= binomial_upper(stats.ALPHA, 2000)
    with pytest.raises(ValueError, match="margin"):
        stats.compare([1.0, 2.0], "equal")


def test_power_numbers_agree_with_a_simulation():
    """detectable_effect: a true effect of that size is found ~80 % of the time by the paired t-test at the same
    alpha; pairs_needed: that many pairs find the observed effect ~80 % of the time."""
    rng = np.random.default_rng(10)
    n, sd, alpha = 6, 2.0, 0.0125
    mde = stats.detectable_effect(n, sd, alpha)
    hits = np.mean(scipy.stats.ttest_1samp(rng.normal(mde, sd, (SIMS, n)), 0, axis=1).pvalue < alpha)
    assert 0.77 <= hits <= 0.83
    need = stats.pairs_needed(1.0, 2.0, 0.05)
    power_at = np.mean(scipy.stats.ttest_1samp(rng.normal(1.0, 2.0, (SIMS, need)), 0, axis=1).pvalue < 0.05)
    power_below = np.mean(scipy.stats.ttest_1samp(rng.normal(1.0, 2.0, (SIMS, need - 3)), 0, axis=1).pvalue < 0.05)
    assert power_at >= 0.78 and power_below < 0.8
    assert stats.pairs_needed(0.0, 1.0) is None and stats.pairs_needed(1.0, 0.0) is None


def test_power_notes_under_a_table():
    found = stats.family([stats.compare([17.0, 19.0, 16.0]), stats.compare([0.5, -0.2, 0.3])])
    notes = paired.power_notes(["shortcut > none", "ApproxSign > STE"], found)
    assert notes[0].startswith("smallest effect these pairs detect (80% power") and "alpha/m = 0.05/2" in notes[0]
    assert len(notes) == 2 and notes[1].startswith("ApproxSign > STE is inconclusive; about ")
    n = stats.pairs_needed(found[1].mean, found[1].sd, 0.025)
    assert f"about {n} seeds per cell" in notes[1]
