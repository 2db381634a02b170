"""The coordinator part of federated-feature-statistics (runs on the hub): shared bins from the
sites' coarse spans, then the pooled moments (exact: Chan et al.'s merge of count, sum and
centred sum of squares) and the pooled quantiles as intervals guaranteed to hold them (from the
merged histograms, whatever the suppressed bins held)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUANTILES = {"p5": 0.05, "q1": 0.25, "median": 0.5, "q3": 0.75, "p95": 0.95}


def _released(done: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in done["sites"] if s["status"] == "released"]


def first_round(params: dict[str, Any]) -> dict[str, Any]:
    return {"round": "span"}


def next_round(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    from radflow.federation.stats import shared_edges

    if rounds[-1]["round"] != "span":
        return None
    bins = int(params.get("bins", 64))
    sites = [s["release"] for s in _released(rounds[-1])]
    edges = []
    for f in range(len(params["features"])):
        row = []
        for g in range(len(params["segments"])):
            spans = [(r["span_low"][f][g], r["span_high"][f][g]) for r in sites
                     if r["cells"][f][g]]
            row.append(shared_edges(spans, bins) if spans else None)
        edges.append(row)
    return {"round": "histogram", "bins": bins, "edges": edges}


def combine(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    from radflow.federation.stats import Moments, merge_moments, quantile_bounds

    span = {s["site"]: s["release"] for s in _released(rounds[0])}
    histo = {s["site"]: s["release"] for s in _released(rounds[1])} if len(rounds) > 1 else {}
    edges = rounds[1]["params"]["edges"] if len(rounds) > 1 else None
    table, intervals = [], []
    for f, feature in enumerate(params["features"]):
        for g, segment in enumerate(params["segments"]):
            counted = {site: r for site, r in span.items() if r["cells"][f][g]}
            pooled = merge_moments(Moments(r["cells"][f][g], r["sums"][f][g], r["m2"][f][g])
                                   for r in counted.values())
            row: dict[str, Any] = {"feature": feature, "segment": segment, "n": pooled.n,
                                   "sites": len(counted), "mean": pooled.mean,
                                   "sd": pooled.sd, "variance": pooled.variance}
            parts = [(histo[site]["histograms"][f][g], r["cells"][f][g])
                     for site, r in counted.items() if site in histo]
            widest = 0.0
            for label, q in QUANTILES.items():
                if edges is None or edges[f][g] is None or not parts:
                    row[label] = None
                    continue
                bound = quantile_bounds(parts, edges[f][g], q)
                row[label] = bound.estimate
                widest = max(widest, bound.bound / 2)
                intervals.append({"feature": feature, "segment": segment, "quantile": q,
                                  "low": bound.low, "high": bound.high,
                                  "error_bound": bound.bound / 2})
            row["quantile_error_bound"] = widest
            row["cells_suppressed_at"] = ", ".join(sorted(
                site for site, r in span.items() if r["cells"][f][g] is None))
            table.append(row)
    return {"features": table, "quantile_intervals": intervals,
            "sites_released": len(span),
            "sites_not_in": {s["site"]: s.get("refusal", "missing")
                             for s in rounds[0]["sites"] if s["status"] != "released"},
            "guarantee": "each quantile lies in [low, high]: the estimate (the midpoint) is "
                         "within error_bound of the pooled quantile (numpy's default "
                         "definition); moments are exact"}


def charts(result: dict[str, Any], rounds: list[dict[str, Any]], folder: Path) -> list[str]:
    """One panel per feature and segment, in the feature's unit: each site's distribution as a
    box from its released histogram, only where that histogram is complete (a site whose bins
    its gate suppressed is named as suppressed, not drawn), and the pooled distribution from
    the quantile estimates, each quantile's guaranteed interval shaded across it."""
    from radflow.federation.charts import (
        box_legend,
        complete,
        feature_axis,
        label_positions,
        panel_grid,
        pooled_box,
        save_grid,
        site_box,
    )
    from radflow.federation.stats import quantile_bounds

    params = result["params"]
    if len(rounds) < 2:
        return []
    span = {s["site"]: s["release"] for s in _released(rounds[0])}
    sites = _released(rounds[1])
    cells = [(f, g) for f in range(len(params["features"]))
             for g in range(len(params["segments"]))][:12]
    fig, axes = panel_grid(len(cells), height=3.4)
    edges = rounds[1]["params"]["edges"]
    for ax, (f, g) in zip(axes, cells, strict=False):
        feature, segment = params["features"][f], params["segments"][g]
        unit = feature_axis(ax, feature, segment)
        labels, suppressed = [], set()
        for s in sites:
            counts = s["release"]["histograms"][f][g]
            expected = span[s["site"]]["cells"][f][g]  # None: the cell itself suppressed
            if not edges[f][g] or expected == 0:
                continue  # no values of this cell at the site
            labels.append(s["site"])
            if expected is None or not complete(counts, expected):
                suppressed.add(s["site"])
                continue
            q = {k: quantile_bounds([(counts, expected)], edges[f][g], v).estimate
                 for k, v in QUANTILES.items()}
            site_box(ax, len(labels) - 1, s["site"], q, unit)
        row = next(r for r in result["combined"]["features"]
                   if r["feature"] == feature and r["segment"] == segment)
        if row["median"] is not None:
            bounds = {i["quantile"]: (i["low"], i["high"])
                      for i in result["combined"]["quantile_intervals"]
                      if (i["feature"], i["segment"]) == (feature, segment)}
            pooled_box(ax, len(labels), row, bounds, unit)
            labels.append("pooled")
        label_positions(ax, labels, suppressed)
    save_grid(fig, axes, len(cells), folder / "distributions.png", legend=box_legend())
    return ["distributions.png"]
