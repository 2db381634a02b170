"""The coordinator part of federated-logistic-regression (runs on the hub): Newton-Raphson over
the sums of the sites' gradients and Hessians, one round per step, until no coefficient moves
more than the tolerance; then Wald standard errors, z and p-values from the pooled Hessian."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _released(done: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["release"] for s in done["sites"] if s["status"] == "released"]


def _names(params: dict[str, Any]) -> list[str]:
    return ["intercept", *params["terms"]]


def first_round(params: dict[str, Any]) -> dict[str, Any]:
    p = len(params["terms"]) + 1
    return {"round": "irls", "iteration": 0, "beta": [0.0] * p, "parameters": p,
            "step": None}


def _sums(done: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    parts = _released(done)
    return (np.sum([r["gradient"] for r in parts], axis=0),
            np.sum([r["hessian"] for r in parts], axis=0),
            float(sum(r["loglik"] for r in parts)))


def next_round(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    from radflow.federation.stats import newton_step

    last = rounds[-1]["params"]
    step = last.get("step")
    if step is not None and step < float(params.get("tolerance", 1e-10)):
        return None  # the last round evaluated the converged coefficients
    if len(rounds) >= int(params.get("max_rounds", 30)):
        return None
    gradient, hessian, loglik = _sums(rounds[-1])
    if loglik > -1e-6:
        return None  # the model fits (almost) every case exactly: separation, no finite MLE
    beta = np.asarray(last["beta"], dtype=float)
    try:
        new = newton_step(beta, gradient, hessian)
    except np.linalg.LinAlgError:
        return None  # a singular Hessian: reported as not converged
    if not np.all(np.isfinite(new)) or np.max(np.abs(new)) > 1e8:
        return None  # diverging: (quasi-)separation; reported as not converged
    return {"round": "irls", "iteration": last["iteration"] + 1,
            "beta": [float(v) for v in new], "parameters": len(new),
            "step": float(np.max(np.abs(new - beta)))}


def combine(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    from radflow.federation.stats import logistic_summary

    convergence = []
    for done in rounds:
        parts = _released(done)
        convergence.append({"round": done["params"]["iteration"],
                            "loglik": float(sum(r["loglik"] for r in parts)) if parts else None,
                            "max_step": done["params"].get("step"),
                            "sites": len(parts)})
    final = rounds[-1]
    last_step = final["params"].get("step")
    converged = last_step is not None and last_step < float(params.get("tolerance", 1e-10))
    out: dict[str, Any] = {
        "converged": converged,
        **({} if converged else {"note": "no convergence: the coefficients diverge or the "
                                          "Hessian is singular (perfect separation, or too "
                                          "few cases for the terms); no fit is reported"}),
        "rounds": len(rounds), "convergence": convergence,
        "sites_in_fit": sorted(s["site"] for s in final["sites"] if s["status"] == "released"),
        "sites_not_in": {s["site"]: s.get("refusal", "missing")
                         for done in rounds for s in done["sites"] if s["status"] != "released"}}
    if not _released(final) or not converged:
        return out
    _, hessian, loglik = _sums(final)
    fit = logistic_summary(np.asarray(final["params"]["beta"], dtype=float), hessian, loglik)
    out["n"] = sum(r["n"] for r in _released(final))
    out["coefficients"] = [
        {"term": name, "estimate": b, "std_error": se, "z": z, "p_value": p,
         "ci_low": b - 1.959963984540054 * se, "ci_high": b + 1.959963984540054 * se}
        for name, b, se, z, p in zip(_names(params), fit.coefficients, fit.standard_errors,
                                     fit.z, fit.p_values, strict=True)]
    out["loglik"] = fit.loglik
    return out


def charts(result: dict[str, Any], rounds: list[dict[str, Any]], folder: Path) -> list[str]:
    """A forest plot of the coefficients (95 % Wald intervals) and the log-likelihood per
    round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combined = result["combined"]
    if "coefficients" not in combined:
        return []
    rows = combined["coefficients"]
    fig, (forest, path) = plt.subplots(1, 2, figsize=(10, 0.5 * len(rows) + 2.2),
                                       gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(len(rows)))[::-1]
    forest.errorbar([r["estimate"] for r in rows], ys,
                    xerr=[[r["estimate"] - r["ci_low"] for r in rows],
                          [r["ci_high"] - r["estimate"] for r in rows]],
                    fmt="o", color="#1f5fbf", ecolor="#7a8bb0", capsize=3)
    forest.axvline(0, color="#999", lw=0.8)
    forest.set_yticks(ys, [r["term"] for r in rows], fontsize=8)
    forest.set_title("coefficients (95 % CI)", fontsize=9)
    steps = [c for c in combined["convergence"] if c["loglik"] is not None]
    path.plot([c["round"] for c in steps], [c["loglik"] for c in steps], marker="o")
    path.set_xlabel("round", fontsize=8)
    path.set_title("log-likelihood per round", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "forest.png", dpi=90)
    plt.close(fig)
    return ["forest.png"]
