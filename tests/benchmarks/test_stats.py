"""Student t and Welch's test of benchmarks.report.stats against closed forms and table values."""
from __future__ import annotations

import math
import statistics

import pytest

from siambench.benchmarks.report.stats import betainc, one_sample, pooled, seed_test, t_cdf, t_ppf, t_sf, welch


@pytest.mark.parametrize("t", [-3.0, -0.4, 0.0, 0.7, 2.5, 40.0])
def test_t_cdf_matches_closed_forms_for_df_1_and_2(t: float) -> None:
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_table_values_and_quantiles() -> None:
    assert 2 * t_sf(2.0, 10) == pytest.approx(0.0733880, abs=1e-6)  # two-sided p, t=2, 10 df
    assert t_ppf(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert t_ppf(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_ppf(0.95, 1) == pytest.approx(6.313752, abs=1e-6)
    assert t_ppf(0.025, 30) == pytest.approx(-2.042272, abs=1e-6)
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - sum_{j<2} C(4,j) .4^j .6^(4-j)
    with pytest.raises(ValueError):
        betainc(1, 1, 1.5)


def test_t_cdf_non_integer_df_matches_numerical_integration() -> None:
    df, t = 3.7, 1.3
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    n = 20000  # Simpson's rule from 0 to t, plus the half below 0
    h = t / n
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    integral = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    assert t_cdf(t, df) == pytest.approx(0.5 + integral, abs=1e-9)


def test_welch_statistic_df_and_p() -> None:
    a, b = [10.0, 11.0, 12.5], [3.0, 4.0, 3.5]
    r = welch(a, b, threshold=5.0)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert r.diff == pytest.approx(7.6666667) and r.df == pytest.approx(df)
    assert r.t == pytest.approx((7.6666667 - 5) / math.sqrt(va + vb))
    assert r.p_greater == pytest.approx(t_sf(r.t, df)) and 0.02 < r.p_greater < 0.03
    half = t_ppf(0.975, df) * math.sqrt(va + vb)
    assert r.ci == pytest.approx((r.diff - half, r.diff + half))
    assert r.ci[0] < 5.0 < r.ci[1]  # the 95% interval still includes the threshold: p_two_sided > 0.05
    assert r.p_two_sided == pytest.approx(2 * r.p_greater) and r.p_two_sided > 0.05
    # a clearly failing side: p of "a exceeds b" near 1
    assert welch(b, a).p_greater > 0.99


def test_no_test_with_one_trial_and_degenerate_spread() -> None:
    assert welch([1.0], [2.0, 3.0]) is None and welch([1.0, 2.0], [2.0]) is None
    assert one_sample([70.0], 70.0) is None
    same = welch([5.0, 5.0], [1.0, 1.0], threshold=2.0)
    assert same.p_greater == 0.0 and same.ci == (4.0, 4.0)
    r = one_sample([75.0, 76.0, 77.0], 75.5)
    assert r.diff == pytest.approx(0.5) and r.df == 2
    assert r.p_two_sided == pytest.approx(2 * t_sf(0.5 / (1 / 3 ** 0.5), 2))  # se = std / sqrt(n) = 1 / sqrt(3)


def test_pooled_t_borrows_the_spread_of_the_side_with_seeds() -> None:
    # three pretraining seeds against one random-init run: s = 2 (all the spread is on a), se = 2 * sqrt(1/3 + 1)
    a, b = [78.0, 80.0, 82.0], [66.0]
    r = pooled(a, b, threshold=10.0)
    se = 2.0 * math.sqrt(1 / 3 + 1)
    assert r.name == "pooled-variance t" and r.df == 2 and r.diff == pytest.approx(14.0)
    assert r.t == pytest.approx(4.0 / se) and r.p_greater == pytest.approx(t_sf(4.0 / se, 2))
    assert r.ci == pytest.approx((14.0 - t_ppf(0.975, 2) * se, 14.0 + t_ppf(0.975, 2) * se))
    # both sides' squares count: a = [1, 3] (ss 2), b = [0, 0, 3] (ss 6): s^2 = 8 / 3
    r2 = pooled([1.0, 3.0], [0.0, 0.0, 3.0])
    assert r2.t == pytest.approx((2.0 - 1.0) / math.sqrt(8 / 3 * (1 / 2 + 1 / 3)))
    assert pooled([1.0], [2.0]) is None and pooled([], [1.0, 2.0]) is None


def test_seed_test_is_welch_with_repeats_on_both_sides_else_pooled() -> None:
    assert seed_test([1.0, 2.0], [0.0, 0.5]) == welch([1.0, 2.0], [0.0, 0.5])
    assert seed_test([1.0, 2.0], [0.0]).name == "pooled-variance t"
    assert seed_test([1.0], [0.0]) is None
