"""Federated statistics: what each site computes on its own values, what the hub computes from
the sites' releases, and nothing in between. Every merge is exact where the pooled answer is a
function of sufficient statistics (moments, the logistic likelihood's gradient and Hessian,
Levene's sums), and states a guaranteed bound where it is not (quantiles from histograms).

Site side (numbers that pass the egress gate):
    moments(values)                       -> Moments(n, sum, m2)   (m2: centred sum of squares)
    coarse_span(values)                   -> (low, high), outward on a 2-significant-digit grid
    histogram(values, edges)              -> bin counts
    logistic_terms(X, y, beta)            -> gradient, Hessian, log-likelihood at beta
    absolute_deviations(values, centre)   -> (sum |x - c|, sum (x - c)^2)

Hub side:
    merge_moments(parts)                  -> the pooled Moments (Chan et al.'s parallel update)
    shared_edges(spans, bins)             -> bin edges every site uses
    quantile_bounds(histograms, edges, q) -> an interval that surely holds the pooled quantile
    order_statistic_bounds(histograms, edges, ranks) -> the same for order statistics, many at once
    newton_step / logistic_summary        -> IRLS over the summed terms; SE, z, p
    levene(groups)                        -> Levene's W and p from per-group sums
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# -- moments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """Count, sum and centred sum of squares of some values: enough for the exact mean,
    variance and standard deviation, and mergeable without any value."""

    n: int
    sum: float
    m2: float

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator)."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance) if self.n > 1 else math.nan


def moments(values: Iterable[float]) -> Moments:
    """Two passes over the site's values (the centred sum of squares without cancellation)."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return Moments(0, 0.0, 0.0)
    mean = float(x.mean())
    return Moments(int(x.size), float(x.sum()), float(((x - mean) ** 2).sum()))


def merge_moments(parts: Iterable[Moments]) -> Moments:
    """The pooled moments (Chan, Golub and LeVeque's pairwise update: stable for any split)."""
    n, mean, m2 = 0, 0.0, 0.0
    for part in parts:
        if part.n == 0:
            continue
        total = n + part.n
        delta = part.mean - mean
        mean += delta * part.n / total
        m2 += part.m2 + delta * delta * n * part.n / total
        n = total
    return Moments(n, mean * n, m2)


# -- quantiles -------------------------------------------------------------------------------


def _grid(value: float, digits: int = 2) -> float:
    """The step of a ``digits``-significant-digit grid at ``value``'s magnitude."""
    if value == 0:
        return 1.0
    return 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)


def coarse_span(values: Iterable[float], digits: int = 2) -> tuple[float, float]:
    """Where the site's values lie, rounded outward to ``digits`` significant digits: neither
    end is a value of the data (unless a value sits exactly on the grid)."""
    x = np.asarray(list(values), dtype=float)
    lo, hi = float(x.min()), float(x.max())
    step = max(_grid(lo, digits), _grid(hi, digits))
    low = math.floor(lo / step) * step
    high = math.ceil(hi / step) * step
    if high <= low:
        high = low + step
    return _tidy(low), _tidy(high)


def _tidy(value: float) -> float:
    return float(f"{value:.12g}")


def is_coarse(value: float, digits: int = 2) -> bool:
    """Whether a number has at most ``digits`` significant digits (what the gate accepts for a
    coarse span)."""
    if value == 0:
        return True
    scaled = abs(value) / _grid(value, digits)
    return abs(scaled - round(scaled)) < 1e-6


def shared_edges(spans: Sequence[tuple[float, float]], bins: int) -> list[float]:
    """``bins`` equal bins over the union of the sites' coarse spans."""
    low = min(s[0] for s in spans)
    high = max(s[1] for s in spans)
    return [_tidy(v) for v in np.linspace(low, high, bins + 1)]


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Bin counts; the last bin is closed on the right. Values outside the edges (which the
    shared edges never leave) go to the first or last bin."""
    x = np.clip(np.asarray(list(values), dtype=float), edges[0], edges[-1])
    counts, _ = np.histogram(x, bins=np.asarray(edges, dtype=float))
    return [int(c) for c in counts]


@dataclass(frozen=True)
class QuantileBound:
    """The pooled ``q`` quantile lies in [low, high] (its error bound is ``high - low``)."""

    q: float
    low: float
    high: float

    @property
    def estimate(self) -> float:
        return (self.low + self.high) / 2

    @property
    def bound(self) -> float:
        return self.high - self.low


def _cumulative_range(counts: Sequence[int | None], n: int) -> list[tuple[int, int]]:
    """For each bin, the least and most values the bins up to it can hold, given the known
    counts, the site's total ``n`` and that a suppressed bin holds at least one value (the
    gate suppresses only non-zero bins; a complementary one may be large)."""
    hidden = n - sum(c for c in counts if c is not None)
    total_hidden = sum(1 for c in counts if c is None)
    out = []
    known = hidden_before = 0
    for c in counts:
        if c is None:
            hidden_before += 1
        else:
            known += c
        after = total_hidden - hidden_before
        out.append((known + (hidden if after == 0 else hidden_before), known + hidden - after))
    return out


def quantile_bounds(histograms: Sequence[tuple[Sequence[int | None], int]],
                    edges: Sequence[float], q: float) -> QuantileBound:
    """An interval that holds the pooled ``q`` quantile (numpy's default, linear interpolation
    between order statistics) whatever the suppressed bins held.

    Args:
        histograms: per site, its bin counts (None: suppressed) and its n.
        edges: the shared bin edges.
        q: the quantile, 0..1.
    """
    n = sum(total for _, total in histograms)
    ranges = [_cumulative_range(counts, total) for counts, total in histograms]
    bins = len(edges) - 1
    lowest = [sum(r[b][0] for r in ranges) for b in range(bins)]   # values surely <= edge b+1
    highest = [sum(r[b][1] for r in ranges) for b in range(bins)]  # values possibly <= edge b+1
    position = q * (n - 1)  # linear interpolation between order statistics floor/ceil
    first, last = math.floor(position), math.ceil(position)  # 0-based ranks
    # the value of rank r lies in bin b when cum(b-1) <= r < cum(b)
    low_bin = next(b for b in range(bins) if highest[b] > first)
    high_bin = next(b for b in range(bins) if lowest[b] > last)
    return QuantileBound(q, float(edges[low_bin]), float(edges[high_bin + 1]))



def order_statistic_bounds(histograms: Sequence[tuple[Sequence[int | None], int]],
                           edges: Sequence[float], ranks: Iterable[int]) -> list[QuantileBound]:
    """For each 0-based ``rank`` of the pooled values in ascending order, an interval that
    holds that order statistic whatever the suppressed bins held: ``quantile_bounds`` at
    q = rank / (n - 1), without the float rounding of q * (n - 1), for many ranks at once.

    Raises:
        ValueError: a rank outside 0..n-1.
    """
    n = sum(total for _, total in histograms)
    ranges = [_cumulative_range(counts, total) for counts, total in histograms]
    lowest = np.sum([[r[0] for r in site] for site in ranges], axis=0)   # surely <= edge b+1
    highest = np.sum([[r[1] for r in site] for site in ranges], axis=0)  # possibly <= edge b+1
    out = []
    for rank in ranks:
        if not 0 <= rank < n:
            raise ValueError(f"rank {rank} is outside 0..{n - 1}")
        low_bin = int(np.searchsorted(highest, rank, side="right"))  # first bin: highest > rank
        high_bin = int(np.searchsorted(lowest, rank, side="right"))  # first bin: lowest > rank
        q = rank / (n - 1) if n > 1 else 0.5
        out.append(QuantileBound(q, float(edges[low_bin]), float(edges[high_bin + 1])))
    return out

# -- logistic regression (IRLS) ----------------------------------------------------------------


def logistic_terms(x: np.ndarray, y: np.ndarray, beta: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """One site's gradient, Hessian (of the negative log-likelihood: X'WX) and log-likelihood
    at ``beta``; summed over sites they are the pooled ones."""
    eta = x @ beta
    p = 1.0 / (1.0 + np.exp(-eta))
    gradient = x.T @ (y - p)
    hessian = (x * (p * (1 - p))[:, None]).T @ x
    loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    return gradient, hessian, loglik


def newton_step(beta: np.ndarray, gradient: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    return beta + np.linalg.solve(hessian, gradient)


@dataclass(frozen=True)
class LogisticFit:
    coefficients: list[float]
    standard_errors: list[float]
    z: list[float]
    p_values: list[float]
    loglik: float


def logistic_summary(beta: np.ndarray, hessian: np.ndarray, loglik: float) -> LogisticFit:
    """Wald standard errors, z and two-sided p-values from the (pooled) Hessian at the fit."""
    from scipy.stats import norm

    se = np.sqrt(np.diag(np.linalg.inv(hessian)))
    z = beta / se
    p = 2 * norm.sf(np.abs(z))
    return LogisticFit([float(v) for v in beta], [float(v) for v in se], [float(v) for v in z],
                       [float(v) for v in p], float(loglik))


# -- Levene's test across groups -----------------------------------------------------------------


def absolute_deviations(values: Iterable[float], centre: float) -> tuple[float, float]:
    """Round 2 of Levene's test at one group: the sum of |x - centre| and of its squares."""
    z = np.abs(np.asarray(list(values), dtype=float) - centre)
    return float(z.sum()), float((z * z).sum())


@dataclass(frozen=True)
class Levene:
    statistic: float
    p_value: float
    df: tuple[int, int]


def levene(groups: Sequence[tuple[int, float, float]]) -> Levene:
    """Levene's W from each group's (n, sum z, sum z^2), where z = |x - group mean| (the
    centre ``mean``; scipy's ``levene(..., center='mean')``)."""
    from scipy.stats import f

    n = np.array([g[0] for g in groups], dtype=float)
    sz = np.array([g[1] for g in groups], dtype=float)
    sz2 = np.array([g[2] for g in groups], dtype=float)
    total, k = n.sum(), len(groups)
    zbar_i = sz / n
    zbar = sz.sum() / total
    between = float(np.sum(n * (zbar_i - zbar) ** 2))
    within = float(np.sum(sz2 - n * zbar_i ** 2))
    statistic = (total - k) / (k - 1) * between / within
    return Levene(float(statistic), float(f.sf(statistic, k - 1, total - k)),
                  (k - 1, int(total - k)))
