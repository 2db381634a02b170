"""The site part of federated-harmonization-check: per feature, segment and vendor, counts,
sums and centred sums of squares (round ``means``); then sums of absolute deviations (and
their squares) from the site's own mean and from each vendor's pooled mean (round
``deviations``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def harmonization(cohort: dict[str, Any], features: list[str], segments: list[str],
                  vendors: list[str], round: str, vendor_means: list | None = None,
                  edges: list | None = None, bins: int | None = None,
                  site: str | None = None, **_study: Any) -> dict[str, Any]:
    from radflow.federation.site_data import feature_table
    from radflow.federation.stats import absolute_deviations, coarse_span, histogram, moments
    from radflow.runtime import site_runtime

    table = feature_table(site_runtime(site).catalog_url, cohort, features, segments)
    vendor_of = [c["vendor"] for c in table.covariates]

    def groups(f: str, g: str) -> tuple[np.ndarray, list[np.ndarray]]:
        column = table.column(f, g)
        every = np.array([v for v in column if v is not None], dtype=float)
        by_vendor = [np.array([v for v, who in zip(column, vendor_of, strict=True)
                               if v is not None and who == vendor], dtype=float)
                     for vendor in vendors]
        return every, by_vendor

    cells, sums, m2 = [], [], []
    site_cells, site_sums, site_m2, span_low, span_high, histograms = [], [], [], [], [], []
    site_abs, site_sq, vendor_abs, vendor_sq = [], [], [], []
    for i, f in enumerate(features):
        rows = [[], [], []]
        dev = [[], [], [], []]
        own = [[], [], [], [], [], []]
        for j, g in enumerate(segments):
            every, by_vendor = groups(f, g)
            whole = moments(every)
            own[0].append(whole.n)
            own[1].append(whole.sum)
            own[2].append(whole.m2)
            low, high = coarse_span(every) if every.size else (0.0, 0.0)
            own[3].append(low)
            own[4].append(high)
            if round == "deviations":
                cell_edges = edges[i][j]
                own[5].append(histogram(every, cell_edges) if every.size and cell_edges
                              else [0] * int(bins))
            stats = [moments(v) for v in by_vendor]
            rows[0].append([m.n for m in stats])
            rows[1].append([m.sum for m in stats])
            rows[2].append([m.m2 for m in stats])
            if round == "deviations":
                mine = absolute_deviations(every, float(every.mean())) if every.size \
                    else (0.0, 0.0)
                dev[0].append(mine[0])
                dev[1].append(mine[1])
                centres = vendor_means[i][j]
                pairs = [absolute_deviations(v, c) if v.size and c is not None else (0.0, 0.0)
                         for v, c in zip(by_vendor, centres, strict=True)]
                dev[2].append([a for a, _ in pairs])
                dev[3].append([b for _, b in pairs])
        cells.append(rows[0])
        sums.append(rows[1])
        m2.append(rows[2])
        site_cells.append(own[0])
        site_sums.append(own[1])
        site_m2.append(own[2])
        span_low.append(own[3])
        span_high.append(own[4])
        histograms.append(own[5])
        for target, value in zip((site_abs, site_sq, vendor_abs, vendor_sq), dev, strict=True):
            target.append(value)
    n = len(table.series)
    if round == "means":
        release = {"n": n, "cells": cells, "sums": sums, "m2": m2, "site_cells": site_cells,
                   "site_sums": site_sums, "site_m2": site_m2, "span_low": span_low,
                   "span_high": span_high}
    elif round == "deviations":
        release = {"n": n, "cells": cells, "site_cells": site_cells, "site_abs": site_abs,
                   "site_sq": site_sq, "vendor_abs": vendor_abs, "vendor_sq": vendor_sq,
                   "histograms": histograms}
    else:
        raise ValueError(f"no round {round!r} in federated-harmonization-check")
    return {"local": {"series": n, "round": round}, "release": release}
