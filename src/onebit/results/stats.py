"""The statistics behind a verdict: a paper's conclusion tested on paired differences (``onebit.results.paired``).

For n paired differences d_i = 100 (m_better,i - m_worse,i) (points; same cell but for one option, same seed):

- mean d = (1/n) sum_i d_i, s = sqrt(sum_i (d_i - d)^2 / (n - 1));
- the 95 % interval d +- t_{0.975, n-1} s / sqrt(n) (Student's t on the pairs; with 3 pairs t = 4.30, not 2);
  beside it, for n >= 5, the BCa bootstrap interval of the mean (``scipy.stats.bootstrap``, Efron 1987), which does
  not assume normal differences;
- the probability of improvement P(better > worse) = (#{d_i > 0} + #{d_i = 0} / 2) / n over the pairs (the paired
  form of rliable's probability of improvement, Agarwal et al., NeurIPS 2021; Bouthillier et al., MLSys 2021);
- a p-value: for a claim "better > worse" the two-sided one-sample t-test of mean 0; for a claim "a ~ b" with the
  equivalence margin delta that the table states, Schuirmann's two one-sided tests (TOST, 1987) of |mean| < delta
  while |d| < delta, else the two-sided test of mean = +-delta on the mean's side (the difference exceeds the
  margin);
- across the conclusions of one table, Holm's step-down adjustment (Holm 1979, ``statsmodels.stats.multitest``);
- the verdict, one of exactly three words: ``supported`` (the adjusted p < alpha and the interval lies on the
  claim's side: above 0, or inside +-delta for an "equal" claim), ``contradicted`` (the adjusted p < alpha on the
  other side: below 0, or beyond the margin), ``inconclusive`` (otherwise: the interval contains 0, or fewer than
  2 pairs). With one conclusion the verdict is exactly "the 95 % interval excludes 0"; with m conclusions Holm
  tests the smallest p at alpha / m, the next at alpha / (m - 1), ... so an interval that barely excludes 0 can
  still be ``inconclusive``.

How many seeds (``statsmodels.stats.power.TTestPower``, the paired t-test's power): the smallest effect the current
n pairs detect with 80 % power, MDE = d_z s where d_z solves power(d_z, n, alpha / m) = 0.8 (alpha / m: Holm's
strictest step, so that the estimate holds for every conclusion); and the pairs that would decide an inconclusive
conclusion, the n that gives 80 % power for the observed standardized effect |d| / s.
"""

from __future__ import annotations

import gc
import math
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

ALPHA = 0.05
LEVEL = 0.95
POWER = 0.8
BOOTSTRAP_MIN = 5        # pairs from which the bootstrap interval is shown beside the t-interval
BOOTSTRAP_RESAMPLES = 9999
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
CLAIMS = ("positive", "equal")
MAX_SEEDS = 10_000       # "seeds needed" beyond this is reported as more than it


def _arr(diffs: Sequence[float]) -> np.ndarray:
    return np.asarray(list(diffs), dtype=float)


def t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """mean +- t_{(1+level)/2, n-1} s / sqrt(n): Student's t interval of the mean difference (NaN for n < 2; the
    mean itself when every difference is equal)."""
    d = _arr(diffs)
    if len(d) < 2:
        return math.nan, math.nan
    s = d.std(ddof=1)
    if s == 0:
        return float(d.mean()), float(d.mean())
    half = sps.t.ppf((1 + level) / 2, len(d) - 1) * s / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def bootstrap_interval(diffs: Sequence[float], level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The BCa bootstrap interval of the mean (``scipy.stats.bootstrap``, 9999 resamples, a fixed ``seed`` so that a
    table prints the same interval every time); NaN below :data:`BOOTSTRAP_MIN` pairs; the mean when every
    difference is equal (no resample differs)."""
    d = _arr(diffs)
    if len(d) < BOOTSTRAP_MIN:
        return math.nan, math.nan
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # BCa on tiny, tied samples warns; its interval is still the one returned
        ci = sps.bootstrap((d,), np.mean, confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                           rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def prob_improvement(diffs: Sequence[float]) -> float:
    """P(better > worse) over pairs = (#{d_i > 0} + #{d_i = 0} / 2) / n (NaN without pairs)."""
    d = _arr(diffs)
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / len(d)) if len(d) else math.nan


def paired_p(diffs: Sequence[float]) -> float:
    """Two-sided p of the one-sample t-test of mean 0 on the differences (NaN for n < 2; 1 when all are 0)."""
    d = _arr(diffs)
    if len(d) < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def equivalence_p(diffs: Sequence[float], margin: float) -> float:
    """For an "a ~ b" claim with margin delta: while |mean| < delta, TOST's p = max(p(mean > -delta), p(mean <
    delta)) (one-sided t-tests; Schuirmann 1987); else the two-sided p of mean = delta (or -delta, the mean's side),
    the evidence that the difference exceeds the margin. NaN for n < 2."""
    d = _arr(diffs)
    if len(d) < 2:
        return math.nan
    m = float(d.mean())
    if np.all(d == d[0]):
        return 0.0 if abs(m) != margin else 1.0
    if abs(m) < margin:
        return float(max(sps.ttest_1samp(d, -margin, alternative="greater").pvalue,
                         sps.ttest_1samp(d, margin, alternative="less").pvalue))
    return float(sps.ttest_1samp(d, math.copysign(margin, m)).pvalue)


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-Bonferroni adjusted p-values (``statsmodels.stats.multitest.multipletests(method="holm")``): p_(i) sorted
    ascending becomes max_{j <= i} min(1, (m - j + 1) p_(j)); NaN entries stay NaN and are not in the family."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(len(p), math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        # statsmodels' Holm branch calls gc.collect() (60-250 ms with torch loaded); frozen objects are not scanned
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
        finally:
            gc.unfreeze()
    return [float(x) for x in out]


@dataclass(frozen=True)
class Comparison:
    """One conclusion on its pairs: n, mean, sd, the 95 % t-interval (lo, hi), the bootstrap interval (NaN below
    5 pairs), P(better > worse), its p-value, the claim (``positive`` / ``equal``) and its margin, and once
    :func:`family` has adjusted it, the Holm-adjusted p and the verdict. For runs of a ``seeds=auto`` sweep
    (``onebit.results.sequential``) the verdict and adjusted p are the sequential rule's (``rule``, ``look``,
    ``look_n``, ``level``)."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    boot_lo: float
    boot_hi: float
    p_improve: float
    p: float
    claim: str = "positive"
    margin: float | None = None
    p_adj: float = math.nan
    verdict: str = INCONCLUSIVE
    rule: str = "holm"          # "holm" (fixed design) or "sequential" (seeds chosen by the data, see below)
    look: int = 0               # sequential: the look that decided it (or the last one evaluated), its seeds
    look_n: int = 0             # and its level alpha_k
    level: float = math.nan


def compare(diffs: Sequence[float], claim: str = "positive", margin: float | None = None,
            bootstrap: bool = True) -> Comparison:
    """The statistics of one conclusion (see the module docstring); unadjusted: :func:`family` adds Holm's p and
    the verdict. ``bootstrap=False`` leaves the bootstrap interval out (NaN; simulations of thousands of tables)."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; valid: {', '.join(CLAIMS)}")
    if claim == "equal" and (margin is None or not margin > 0):
        raise ValueError(f"an 'equal' claim needs a positive equivalence margin, got {margin!r}")
    d = _arr(diffs)
    n = len(d)
    lo, hi = t_interval(d)
    blo, bhi = bootstrap_interval(d) if bootstrap else (math.nan, math.nan)
    return Comparison(n, float(d.mean()) if n else math.nan, float(d.std(ddof=1)) if n > 1 else math.nan, lo, hi,
                      blo, bhi, prob_improvement(d), paired_p(d) if claim == "positive" else equivalence_p(d, margin),
                      claim, margin)


def decide(c: Comparison, p_adj: float, alpha: float = ALPHA) -> str:
    """The verdict from the (adjusted) p and the side of the mean: see the module docstring."""
    if c.n < 2 or math.isnan(p_adj) or p_adj >= alpha:
        return INCONCLUSIVE
    if c.claim == "equal":
        return SUPPORTED if abs(c.mean) < c.margin else CONTRADICTED
    return SUPPORTED if c.mean > 0 else CONTRADICTED


def family(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The conclusions of one table, Holm-adjusted together (:func:`holm`), each with its verdict."""
    adjusted = holm([c.p for c in comparisons], alpha)
    return [replace(c, p_adj=p, verdict=decide(c, p, alpha)) for c, p in zip(comparisons, adjusted)]


# ----------------------------------------------------------------------------------------------------------
# How many seeds
# ----------------------------------------------------------------------------------------------------------


def detectable_effect(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |mean difference| (points) that n pairs with standard deviation ``sd`` detect with ``power``
    in a two-sided paired t-test at ``alpha``: d_z s, d_z from ``TTestPower().solve_power`` (NaN for n < 2 or no
    spread)."""
    if n < 2 or not sd > 0:
        return math.nan
    dz = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(dz) * sd


def pairs_needed(mean: float, sd: float, alpha: float = ALPHA, power: float = POWER, claim: str = "positive",
                 margin: float | None = None) -> int | None:
    """The pairs (seeds per cell) that give ``power`` to decide the observed effect: n with power(|d| / s, n,
    alpha) = 0.8 (two-sided paired t-test); for an "equal" claim the distance to the margin, (delta - |d|) / s,
    one-sided (TOST's nearer side). None when it cannot be computed (no spread, or an effect of 0, which no
    number of seeds decides)."""
    if not (sd > 0) or math.isnan(mean):
        return None
    effect = (margin - abs(mean)) if claim == "equal" else abs(mean)
    if claim == "equal" and effect <= 0:
        effect = abs(mean) - margin
    if not effect > 0:
        return None
    alternative = "larger" if claim == "equal" else "two-sided"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            n = TTestPower().solve_power(effect_size=effect / sd, nobs=None, alpha=alpha, power=power,
                                         alternative=alternative)
        except Exception:  # noqa: BLE001 - statsmodels' root finder fails for effects too small to reach
            return None
    n = float(np.atleast_1d(n)[0])
    if not math.isfinite(n) or n > MAX_SEEDS:
        return None
    return max(2, math.ceil(n))


def interval_text(lo: float, hi: float) -> str:
    """``[-0.52, 0.86]``, or ``–`` when there is no interval."""
    if math.isnan(lo) or math.isnan(hi):
        return "–"
    return f"[{lo + 0.0:.2f}, {hi + 0.0:.2f}]"
