"""The site part of federated-feature-statistics: per feature and segment, the cohort's
counts, sums, centred sums of squares and coarse spans (round ``span``), then counts in the
hub's shared bins (round ``histogram``). Only these aggregates go to the egress gate."""

from __future__ import annotations

from typing import Any


def feature_statistics(cohort: dict[str, Any], features: list[str], segments: list[str],
                       round: str, edges: list[list[list[float] | None]] | None = None,
                       bins: int | None = None, site: str | None = None,
                       **_study: Any) -> dict[str, Any]:
    from radflow.federation.site_data import feature_table
    from radflow.federation.stats import coarse_span, histogram, moments
    from radflow.runtime import site_runtime

    table = feature_table(site_runtime(site).catalog_url, cohort, features, segments)
    n = len(table.series)
    cells = [[table.values(f, s) for s in segments] for f in features]
    if round == "span":
        stats = [[moments(v) for v in row] for row in cells]
        spans = [[coarse_span(v) if v.size else (0.0, 0.0) for v in row] for row in cells]
        release = {"n": n,
                   "cells": [[m.n for m in row] for row in stats],
                   "sums": [[m.sum for m in row] for row in stats],
                   "m2": [[m.m2 for m in row] for row in stats],
                   "span_low": [[lo for lo, _ in row] for row in spans],
                   "span_high": [[hi for _, hi in row] for row in spans]}
    elif round == "histogram":
        release = {"n": n, "histograms": [
            [histogram(v, cell_edges) if v.size and cell_edges else [0] * int(bins)
             for v, cell_edges in zip(row, edge_row, strict=True)]
            for row, edge_row in zip(cells, edges, strict=True)]}
    else:
        raise ValueError(f"no round {round!r} in federated-feature-statistics")
    return {"local": {"series": n, "round": round}, "release": release}
