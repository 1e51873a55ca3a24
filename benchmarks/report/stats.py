"""Significance tests over trials for the verdict (:mod:`siambench.benchmarks.report.verdict`), in plain math.

scipy is not a dependency, so the Student t distribution is computed here from the
regularized incomplete beta function (continued fraction, modified Lentz method):

    P(T <= t) = 1 - I_x(nu/2, 1/2) / 2,  x = nu / (nu + t^2),  for t >= 0.

* :func:`welch` — Welch's unequal-variance t-test of ``mean(a) - mean(b)`` against a
  threshold, with the Welch–Satterthwaite degrees of freedom and a two-sided CI.
* :func:`one_sample` — the mean of trials against a fixed number (a paper's value).
* :func:`pooled` — Student's t of ``mean(a) - mean(b)`` with one variance pooled over both
  sides, so that a side with a single run (e.g. one random-init encoder against several
  pretraining seeds) borrows the spread measured on the other.
* :func:`seed_test` — Welch when both sides have >= 2 values, else :func:`pooled`.

Welch's and the one-sample test return ``None`` when a side has fewer than two values: one trial has no spread,
and a test that pretended otherwise would lie.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

__all__ = ["betainc", "t_cdf", "t_sf", "t_ppf", "TestResult", "welch", "one_sample", "pooled", "seed_test"]

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),  # even step
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # odd step
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
            last = d * c
        if abs(last - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b  # symmetry: I_x(a,b) = 1 - I_{1-x}(b,a)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    return 1.0 - t_sf(t, df)


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (bisection on :func:`t_cdf`; |error| < 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf needs 0 < q < 1, got {q}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > q:
        lo *= 2.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class TestResult:
    """A t-test of ``diff`` (estimate) against ``threshold``."""

    name: str  # "Welch t" | "one-sample t"
    diff: float  # mean(a) - mean(b), or mean(a) - value
    threshold: float  # H0 of the one-sided p: diff <= threshold
    t: float
    df: float
    p_greater: float  # one-sided p for H1: diff > threshold
    p_two_sided: float  # for H1: diff != threshold
    ci: tuple[float, float]  # two-sided (1 - alpha) interval of diff
    alpha: float = 0.05


def _finish(name: str, diff: float, se: float, df: float, threshold: float, alpha: float) -> TestResult:
    if se == 0.0:  # identical trials on both sides: no spread, the sign decides
        t = math.copysign(math.inf, diff - threshold) if diff != threshold else 0.0
        p_greater = 0.0 if diff > threshold else 1.0 if diff < threshold else 0.5
        return TestResult(name, diff, threshold, t, df, p_greater, 0.0 if diff != threshold else 1.0,
                          (diff, diff), alpha)
    t = (diff - threshold) / se
    half = t_ppf(1.0 - alpha / 2.0, df) * se
    return TestResult(name, diff, threshold, t, df, t_sf(t, df), min(1.0, 2.0 * t_sf(abs(t), df)),
                      (diff - half, diff + half), alpha)


def welch(a: Sequence[float], b: Sequence[float], threshold: float = 0.0, alpha: float = 0.05) -> TestResult | None:
    """Welch's t-test of mean(a) - mean(b) > threshold; None when a side has < 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    # Welch–Satterthwaite; with both variances 0 any df will do (the result does not use it).
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else float(len(a) + len(b) - 2)
    return _finish("Welch t", statistics.fmean(a) - statistics.fmean(b), se, df, threshold, alpha)


def one_sample(a: Sequence[float], value: float, threshold: float = 0.0, alpha: float = 0.05) -> TestResult | None:
    """t-test of mean(a) - value > threshold (``value`` fixed, e.g. a published number)."""
    if len(a) < 2:
        return None
    se = math.sqrt(statistics.variance(a) / len(a))
    return _finish("one-sample t", statistics.fmean(a) - value, se, float(len(a) - 1), threshold, alpha)


def pooled(a: Sequence[float], b: Sequence[float], threshold: float = 0.0, alpha: float = 0.05) -> TestResult | None:
    """Student's t-test of mean(a) - mean(b) > threshold with the variance pooled over both sides.

    Works with one value on a side as long as the other has two or more: the side with
    repeats supplies the spread for both (se = s_pooled * sqrt(1/n_a + 1/n_b), df = n_a + n_b - 2).
    When the single-value side really varies less (an untrained encoder against pretraining
    seeds), this overstates se: the test errs towards "not shown". None below 3 values in all.
    """
    df = len(a) + len(b) - 2
    if not a or not b or df < 1:
        return None
    ss = sum((x - statistics.fmean(v)) ** 2 for v in (a, b) for x in v)
    se = math.sqrt(ss / df * (1.0 / len(a) + 1.0 / len(b)))
    return _finish("pooled-variance t", statistics.fmean(a) - statistics.fmean(b), se, float(df), threshold, alpha)


def seed_test(a: Sequence[float], b: Sequence[float], threshold: float = 0.0,
              alpha: float = 0.05) -> TestResult | None:
    """One value per seed on each side: Welch with >= 2 per side, else :func:`pooled` (None below 3 in all)."""
    r = welch(a, b, threshold, alpha)
    return r if r is not None else pooled(a, b, threshold, alpha)
