"""The federated statistics' arithmetic against the pooled computation on the same values:
moments to 1e-9 relative (numpy), quantile intervals that hold numpy's pooled quantile (with
small bins suppressed as the egress gate does), logistic regression to 1e-6 (statsmodels), and
Levene's test (scipy). The values are split unevenly over sites, with different scales and
offsets, as a federation's would be."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from radflow.federation.egress import _suppress_histogram
from radflow.federation.stats import (
    absolute_deviations,
    coarse_span,
    histogram,
    is_coarse,
    levene,
    logistic_summary,
    logistic_terms,
    merge_moments,
    moments,
    newton_step,
    quantile_bounds,
    shared_edges,
)


def sites_values(seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(1e4, 40.0, 23),      # large offset, small spread: cancellation-prone
            rng.gamma(2.0, 300.0, 61) + 9950,
            rng.normal(10050, 5.0, 12)]


def test_pooled_moments_are_exact() -> None:
    parts = sites_values()
    pooled = np.concatenate(parts)
    merged = merge_moments(moments(p) for p in parts)
    assert merged.n == pooled.size
    for got, want in ((merged.mean, pooled.mean()), (merged.variance, pooled.var(ddof=1)),
                      (merged.sd, pooled.std(ddof=1))):
        assert abs(got - want) <= 1e-9 * abs(want), (got, want)
    # the order of the sites does not matter
    again = merge_moments(moments(p) for p in reversed(parts))
    assert abs(again.variance - merged.variance) <= 1e-9 * merged.variance


def test_a_coarse_span_covers_the_values_and_is_no_value() -> None:
    values = np.array([12.3456, 98.765, 40.0])
    low, high = coarse_span(values)
    assert low <= values.min() and high >= values.max()
    assert (low, high) == (12.0, 99.0)
    assert is_coarse(low) and is_coarse(high) and not is_coarse(12.3456)
    assert coarse_span([-0.0123, 0.5])[0] == -0.02  # outward, at the larger magnitude's grid


@pytest.mark.parametrize("bins", [16, 64])
def test_quantile_intervals_hold_the_pooled_quantiles(bins: int) -> None:
    parts = sites_values()
    pooled = np.concatenate(parts)
    edges = shared_edges([coarse_span(p) for p in parts], bins)
    released = []
    suppressed = 0
    for p in parts:
        counts, cells = _suppress_histogram(histogram(p, edges), 5)  # as the gate does
        suppressed += len(cells)
        released.append((counts, int(p.size)))
        assert sum(histogram(p, edges)) == p.size
    assert suppressed > 0  # the test covers suppressed bins
    width = (edges[-1] - edges[0]) / bins
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        bound = quantile_bounds(released, edges, q)
        want = float(np.quantile(pooled, q))
        assert bound.low <= want <= bound.high, (q, bound, want)
        assert bound.bound >= width - 1e-9
    # without suppression the interval is at most two bins wide
    exact = [(histogram(p, edges), int(p.size)) for p in parts]
    for q in (0.05, 0.5, 0.95):
        assert quantile_bounds(exact, edges, q).bound <= 2 * width + 1e-9


def logistic_data(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for n, shift in ((80, 0.0), (140, 0.5), (60, -0.3)):
        feature = rng.normal(shift, 1.0, n)
        sex = rng.integers(0, 2, n).astype(float)
        age = rng.normal(60, 10, n) / 10
        x = np.column_stack([np.ones(n), feature, sex, age])
        eta = -3 + 0.8 * feature + 0.4 * sex + 0.35 * age
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
        out.append((x, y))
    return out


def test_federated_logistic_regression_equals_the_pooled_fit() -> None:
    import statsmodels.api as sm

    parts = logistic_data()
    beta = np.zeros(4)
    for _ in range(25):
        terms = [logistic_terms(x, y, beta) for x, y in parts]  # what each site releases
        gradient = sum(t[0] for t in terms)
        hessian = sum(t[1] for t in terms)
        new = newton_step(beta, gradient, hessian)
        done = np.max(np.abs(new - beta)) < 1e-10
        beta = new
        if done:
            break
    terms = [logistic_terms(x, y, beta) for x, y in parts]
    fit = logistic_summary(beta, sum(t[1] for t in terms), sum(t[2] for t in terms))
    pooled = sm.Logit(np.concatenate([y for _, y in parts]),
                      np.vstack([x for x, _ in parts])).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(fit.coefficients, pooled.params, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.standard_errors, pooled.bse, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.p_values, pooled.pvalues, rtol=0, atol=1e-6)
    assert abs(fit.loglik - pooled.llf) < 1e-6


def test_levene_from_group_sums_equals_scipy() -> None:
    parts = sites_values()
    groups = []
    for p in parts:  # round 1: each group's mean (n and sum); round 2: deviations from it
        m = moments(p)
        groups.append((m.n, *absolute_deviations(p, m.mean)))
    got = levene(groups)
    want = scipy_stats.levene(*parts, center="mean")
    assert abs(got.statistic - want.statistic) <= 1e-9 * want.statistic
    assert abs(got.p_value - want.pvalue) <= 1e-9 * max(want.pvalue, 1e-300)
    assert got.df == (2, sum(p.size for p in parts) - 3)


def test_the_regression_coordinator_stops_on_separation() -> None:
    """Perfectly separated data have no finite fit: the coordinator stops early (the log-
    likelihood reaches 0) and reports no coefficients, instead of running every round."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "federation" / "flows" / \
        "federated-logistic-regression" / "coordinator.py"
    spec = importlib.util.spec_from_file_location("lr_coordinator", path)
    coordinator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coordinator)
    x = np.column_stack([np.ones(8), np.arange(8.0)])
    y = (np.arange(8) >= 4).astype(float)  # separated at 3.5
    params = {"terms": ["feature:x@liver"], "max_rounds": 60}
    rounds = []
    round_params = coordinator.first_round(params)
    while round_params is not None:
        gradient, hessian, loglik = logistic_terms(x, y, np.asarray(round_params["beta"]))
        rounds.append({"round": "irls", "params": round_params, "sites": [
            {"site": "a", "status": "released", "release": {
                "n": 8, "gradient": list(gradient), "hessian": hessian.tolist(),
                "loglik": loglik}}]})
        round_params = coordinator.next_round(params, rounds)
    result = coordinator.combine(params, rounds)
    assert not result["converged"] and "coefficients" not in result
    assert len(rounds) < 60 and "separation" in result["note"]
