"""Every coordinator copes with any mix of sites: released, refused, invalid_release (the hub's
inbox refused the release) and missing, in any round, including a round where no site released
at all. Each release goes through the site's egress gate (small cells suppressed) and then the
hub's check of the flow's signed release schema, so it is exactly what a coordinator can be
handed; and what a gate lets out, the hub accepts."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from radflow.federation.bundle import build
from radflow.federation.egress import gate
from radflow.federation.policy import SitePolicy
from radflow.federation.structure import check_release
from radflow.hub.coordinator import SingleRound

FLOWS = Path(__file__).resolve().parents[1] / "federation" / "flows"
F, G, V = ["a", "b"], ["liver", "spleen"], ["ge", "siemens"]
POLICY = SitePolicy(min_cohort=10, min_cell=5)


@functools.cache
def load(flow: str) -> tuple[Any, Any]:
    """The flow's coordinator module and its signed release schema."""
    manifest, _ = build(FLOWS / flow, "test@hub")
    if manifest.coordinator_entrypoint is None:
        return SingleRound(manifest.name), manifest.release_schema
    spec = importlib.util.spec_from_file_location(f"mixed_{flow.replace('-', '_')}",
                                                  FLOWS / flow / "coordinator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, manifest.release_schema


def grid(*sizes: int, value: Any = 0) -> Any:
    if not sizes:
        return value
    return [grid(*sizes[1:], value=value) for _ in range(sizes[0])]


def feature_statistics(round_params: dict[str, Any], k: int) -> dict[str, Any]:
    if round_params["round"] == "span":
        cells = grid(2, 2, value=12 + k)
        cells[1][1] = 2  # a small cell: the gate suppresses it (and its sums and span)
        return {"n": 30, "cells": cells, "sums": grid(2, 2, value=120.0),
                "m2": grid(2, 2, value=3.0), "span_low": grid(2, 2, value=1.0),
                "span_high": grid(2, 2, value=9.0)}
    histograms = grid(2, 2, round_params["bins"], value=0)
    histograms[0][0][0], histograms[0][0][1], histograms[0][1][1] = 12 + k, 9, 3
    return {"n": 30, "histograms": histograms}


def harmonization(round_params: dict[str, Any], k: int) -> dict[str, Any]:
    cells, site_cells = grid(2, 2, 2, value=6 + k), grid(2, 2, value=12 + k)
    cells[0][0][1] = 1
    if round_params["round"] == "means":
        return {"n": 30, "cells": cells, "sums": grid(2, 2, 2, value=60.0),
                "m2": grid(2, 2, 2, value=6.0), "site_cells": site_cells,
                "site_sums": grid(2, 2, value=120.0), "site_m2": grid(2, 2, value=3.0),
                "span_low": grid(2, 2, value=1.0), "span_high": grid(2, 2, value=20.0)}
    return {"n": 30, "cells": cells, "site_cells": site_cells,
            "site_abs": grid(2, 2, value=10.0), "site_sq": grid(2, 2, value=12.0),
            "vendor_abs": grid(2, 2, 2, value=4.0), "vendor_sq": grid(2, 2, 2, value=5.0),
            "histograms": grid(2, 2, round_params["bins"], value=6)}


def logistic(round_params: dict[str, Any], k: int) -> dict[str, Any]:
    p = round_params["parameters"]
    return {"n": 60, "events": 25 + k, "nonevents": 35 - k,
            "gradient": [0.5 / (round_params["iteration"] + 1)] * p,
            "hessian": [[10.0 + k if i == j else 1.0 for j in range(p)] for i in range(p)],
            "loglik": -30.0 - k}


def cohort_count(round_params: dict[str, Any], k: int) -> dict[str, Any]:
    return {"n": 40, "matching": 2 if k else 12}  # 2: suppressed ("<k")


FLOW_CASES = {
    "federated-feature-statistics": (feature_statistics, {"features": F, "segments": G,
                                                          "bins": 8}),
    "federated-harmonization-check": (harmonization, {"features": F, "segments": G,
                                                      "vendors": V, "bins": 6}),
    "federated-logistic-regression": (logistic, {"outcome": "contrast", "terms": ["age"],
                                                 "max_rounds": 4}),
    "federated-cohort-count": (cohort_count, {}),
}
# how each site answers, round by round (the last entry for every later round)
MIXES = {
    "every kind of answer": {"r1": ["released"], "r2": ["released"], "ref": ["refused"],
                             "inv": ["invalid_release"], "gone": ["missing"]},
    "invalid in a later round": {"r1": ["released"], "r2": ["released", "invalid_release"]},
    "none released": {"ref": ["refused"], "inv": ["invalid_release"], "gone": ["missing"]},
    "all invalid after the first": {"r1": ["released", "invalid_release"],
                                    "r2": ["released", "missing"]},
}


def drive(coordinator: Any, schema: Any, make: Any, params: dict[str, Any],
          mix: dict[str, list[str]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The hub's study loop (radflow.hub.studies.run_study) without its database."""
    rounds: list[dict[str, Any]] = []
    round_params, asked = coordinator.first_round(params) or {}, sorted(mix)
    while True:
        entries = []
        for k, site in enumerate(asked):
            status = mix[site][min(len(rounds), len(mix[site]) - 1)]
            entry: dict[str, Any] = {"site": site, "status": status}
            if status == "released":  # through the site's gate, then the hub's check
                gated = gate(make(round_params, k), schema, POLICY, params | round_params)
                assert gated.ok, gated.detail
                check_release(gated.released, schema, params | round_params, released=True)
                entry["release"] = gated.released
            elif status != "missing":
                entry["refusal"] = "declined" if status == "refused" else status
            entries.append(entry)
        rounds.append({"round": round_params.get("round", "main"), "params": round_params,
                       "sites": entries})
        released = [e["site"] for e in entries if e["status"] == "released"]
        following = coordinator.next_round(params, rounds) if released else None
        if following is None:
            return coordinator.combine(params, rounds), rounds
        round_params, asked = following, released


@pytest.mark.parametrize("mix", sorted(MIXES))
@pytest.mark.parametrize("flow", sorted(FLOW_CASES))
def test_every_coordinator_copes_with_any_mix_of_sites(flow: str, mix: str,
                                                       tmp_path: Path) -> None:
    coordinator, schema = load(flow)
    make, extra = FLOW_CASES[flow]
    params = {"cohort": {"version": 1, "where": {}}} | extra
    combined, rounds = drive(coordinator, schema, make, params, MIXES[mix])
    assert isinstance(combined, dict) and rounds
    releases = [s["release"] for r in rounds for s in r["sites"] if "release" in s]
    if releases and flow != "federated-logistic-regression":  # the gate suppressed cells
        assert any("null" in json.dumps(r) for r in releases)
    out = [s for s in rounds[0]["sites"] if s["status"] != "released"]
    if "sites_not_in" in combined:  # who was not in, with the code (or missing)
        for entry in out:
            assert combined["sites_not_in"][entry["site"]] == entry.get("refusal", "missing")
    if hasattr(coordinator, "charts"):  # the report's charts too
        result = {"params": params, "combined": combined, "study": "s", "flow": flow,
                  "sites": rounds[-1]["sites"]}
        for name in coordinator.charts(result, rounds, tmp_path):
            assert (tmp_path / name).stat().st_size > 0
