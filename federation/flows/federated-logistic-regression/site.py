"""The site part of federated-logistic-regression: this site's gradient, Hessian and
log-likelihood at the coefficients the hub sent (one IRLS round)."""

from __future__ import annotations

from typing import Any

import numpy as np


def design(table: Any, outcome: str, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix (intercept first, then ``terms``) and the outcome, over the cases
    that have every term."""
    columns = {}
    for term in terms:
        if term.startswith("feature:"):
            feature, _, segment = term.removeprefix("feature:").partition("@")
            columns[term] = table.column(feature, segment)
        elif term == "age":
            columns[term] = [None if c["age"] is None else c["age"] / 10 for c in table.covariates]
        elif term == "sex_female":
            columns[term] = [None if c["sex"] is None else float(c["sex"] == "F")
                             for c in table.covariates]
        elif term == "contrast":
            columns[term] = [float(c["contrast"]) for c in table.covariates]
        elif term.startswith("vendor:"):
            vendor = term.removeprefix("vendor:")
            columns[term] = [None if c["vendor"] is None else float(c["vendor"] == vendor)
                             for c in table.covariates]
        else:
            raise ValueError(f"unknown term {term!r}")
    if outcome == "contrast":
        y = [float(c["contrast"]) for c in table.covariates]
    elif outcome == "sex_female":
        y = [None if c["sex"] is None else float(c["sex"] == "F") for c in table.covariates]
    else:
        raise ValueError(f"unknown outcome {outcome!r}")
    rows = [i for i in range(len(table.series))
            if y[i] is not None and all(columns[t][i] is not None for t in terms)]
    x = np.array([[1.0] + [columns[t][i] for t in terms] for i in rows], dtype=float)
    return x.reshape(len(rows), len(terms) + 1), np.array([y[i] for i in rows], dtype=float)


def logistic(cohort: dict[str, Any], outcome: str, terms: list[str], beta: list[float],
             site: str | None = None, **_study: Any) -> dict[str, Any]:
    from radflow.federation.site_data import feature_table
    from radflow.federation.stats import logistic_terms
    from radflow.runtime import site_runtime

    features = sorted({t.removeprefix("feature:").partition("@")[0] for t in terms
                       if t.startswith("feature:")})
    segments = sorted({t.partition("@")[2] for t in terms if t.startswith("feature:")})
    table = feature_table(site_runtime(site).catalog_url, cohort, features or ["-"],
                          segments or ["-"])
    x, y = design(table, outcome, terms)
    gradient, hessian, loglik = logistic_terms(x, y, np.asarray(beta, dtype=float))
    return {"local": {"cases": len(y)},
            "release": {"n": len(y), "events": int(y.sum()),
                        "nonevents": len(y) - int(y.sum()),
                        "gradient": [float(v) for v in gradient],
                        "hessian": [[float(v) for v in row] for row in hessian],
                        "loglik": float(loglik)}}
