"""The coordinator part of federated-harmonization-check (runs on the hub). Round ``means``:
each vendor's pooled mean per feature and segment (from the sites' counts and sums). Round
``deviations``: Levene's W across sites (centre: each site's own mean) and across vendors
(centre: each vendor's pooled mean), from the released sums of absolute deviations and of
their squares. A feature is flagged when p < alpha. Location and scale per site and vendor
come from the exact pooled moments."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _released(done: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["site"]: s["release"] for s in done["sites"] if s["status"] == "released"}


def first_round(params: dict[str, Any]) -> dict[str, Any]:
    return {"round": "means"}


def _vendor_moments(sites: dict[str, dict[str, Any]], f: int, g: int, v: int):
    from radflow.federation.stats import Moments, merge_moments

    return merge_moments(Moments(r["cells"][f][g][v], r["sums"][f][g][v], r["m2"][f][g][v])
                         for r in sites.values() if r["cells"][f][g][v])


def next_round(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    from radflow.federation.stats import shared_edges

    if rounds[-1]["round"] != "means":
        return None
    sites = _released(rounds[-1])
    cells = [(f, g) for f in range(len(params["features"]))
             for g in range(len(params["segments"]))]
    means = [[[(m.mean if m.n else None) for m in
               (_vendor_moments(sites, f, g, v) for v in range(len(params["vendors"])))]
              for g in range(len(params["segments"]))] for f in range(len(params["features"]))]
    bins = int(params.get("bins", 24))
    edges: list[list[Any]] = [[None] * len(params["segments"]) for _ in params["features"]]
    for f, g in cells:
        spans = [(r["span_low"][f][g], r["span_high"][f][g]) for r in sites.values()
                 if r["site_cells"][f][g]]
        edges[f][g] = shared_edges(spans, bins) if spans else None
    return {"round": "deviations", "vendor_means": means, "edges": edges, "bins": bins}


def combine(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    from radflow.federation.stats import Moments, levene

    alpha = float(params.get("alpha", 0.05))
    first = _released(rounds[0])
    last = _released(rounds[1]) if len(rounds) > 1 else {}
    tests, locations = [], []
    for f, feature in enumerate(params["features"]):
        for g, segment in enumerate(params["segments"]):
            by_site = {}
            for site, r in first.items():
                if site not in last or not r["site_cells"][f][g] \
                        or last[site]["site_abs"][f][g] is None:
                    continue  # no values, or too few (suppressed)
                m = Moments(r["site_cells"][f][g], r["site_sums"][f][g], r["site_m2"][f][g])
                if m.n:
                    by_site[site] = m
                    locations.append({"feature": feature, "segment": segment, "group": site,
                                      "by": "site", "n": m.n, "mean": m.mean, "sd": m.sd})
            site_groups = [(by_site[s].n, last[s]["site_abs"][f][g], last[s]["site_sq"][f][g])
                           for s in sorted(by_site)]
            vendor_groups = []
            for v, vendor in enumerate(params["vendors"]):
                m = _vendor_moments(first, f, g, v)
                sums = [(r["vendor_abs"][f][g][v], r["vendor_sq"][f][g][v])
                        for site, r in last.items() if r["cells"][f][g][v]]
                if m.n and sums and len(sums) == sum(1 for r in first.values()
                                                      if r["cells"][f][g][v]):
                    vendor_groups.append((m.n, sum(a for a, _ in sums), sum(b for _, b in sums)))
                    locations.append({"feature": feature, "segment": segment, "group": vendor,
                                      "by": "vendor", "n": m.n, "mean": m.mean, "sd": m.sd})
            for by, groups in (("site", site_groups), ("vendor", vendor_groups)):
                row: dict[str, Any] = {"feature": feature, "segment": segment, "across": by,
                                       "groups": len(groups)}
                if len(groups) >= 2 and sum(n for n, _, _ in groups) > len(groups):
                    test = levene(groups)
                    row |= {"levene_w": test.statistic, "p_value": test.p_value,
                            "df": f"{test.df[0]}, {test.df[1]}",
                            "effect": "yes" if test.p_value < alpha else "no"}
                else:
                    row |= {"levene_w": None, "p_value": None, "df": "",
                            "effect": "too few groups"}
                tests.append(row)
    return {"levene": tests, "location_and_scale": locations,
            "flagged": sorted({f"{r['feature']} / {r['segment']} ({r['across']})"
                               for r in tests if r["effect"] == "yes"}),
            "sites_released": len(last),
            "sites_not_in": {s["site"]: s.get("refusal", "missing")
                             for s in rounds[0]["sites"] if s["status"] != "released"},
            "method": "Levene's test, centre = group mean (scipy.stats.levene center='mean'), "
                      "from per-group sums of |x - mean| and their squares"}


def charts(result: dict[str, Any], rounds: list[dict[str, Any]], folder: Path) -> list[str]:
    """Location and scale per site and per vendor (mean with +/- 1 sd, in the feature's
    unit), and each site's distribution from its released histogram, one panel per feature
    and segment."""
    from matplotlib.lines import Line2D

    from radflow.federation.charts import SITE, feature_axis, panel_grid, save_grid

    rows = result["combined"]["location_and_scale"]
    cells = sorted({(r["feature"], r["segment"]) for r in rows})[:12]
    if not cells:
        return []
    vendor = "#c0651a"
    fig, axes = panel_grid(len(cells))
    for ax, (feature, segment) in zip(axes, cells, strict=False):
        unit = feature_axis(ax, feature, segment)
        mine = [r for r in rows if (r["feature"], r["segment"]) == (feature, segment)]
        means = [r["mean"] * unit.scale for r in mine]
        ax.errorbar(range(len(mine)), means,
                    yerr=[0 if r["sd"] != r["sd"] else r["sd"] * unit.scale for r in mine],
                    fmt="none", ecolor="#888")
        ax.scatter(range(len(mine)), means, zorder=3,
                   c=[SITE if r["by"] == "site" else vendor for r in mine])
        ax.set_xticks(range(len(mine)), [r["group"][:12] for r in mine], rotation=40,
                      ha="right", fontsize=7)
    legend = [Line2D([], [], marker="o", ls="", color=SITE, label="a site: mean"),
              Line2D([], [], marker="o", ls="", color=vendor, label="a vendor: pooled mean"),
              Line2D([], [], color="#888", label="± 1 SD")]
    save_grid(fig, axes, len(cells), folder / "harmonization.png", legend=legend)
    return ["harmonization.png", *_distributions(result, rounds, folder)]


def _distributions(result: dict[str, Any], rounds: list[dict[str, Any]],
                   folder: Path) -> list[str]:
    """Each site's share of values per shared bin, from complete histograms only: a site
    whose gate suppressed bins is named as suppressed in the panel, not drawn."""
    from radflow.federation.charts import SUPPRESSED, complete, feature_axis, panel_grid, save_grid

    if len(rounds) < 2:
        return []
    params = result["params"]
    edges = rounds[1]["params"]["edges"]
    sites = _released(rounds[1])
    cells = [(f, g) for f in range(len(params["features"]))
             for g in range(len(params["segments"])) if edges[f][g]][:12]
    if not cells or not sites:
        return []
    fig, axes = panel_grid(len(cells), height=3.0)
    for ax, (f, g) in zip(axes, cells, strict=False):
        unit = feature_axis(ax, params["features"][f], params["segments"][g], axis="x")
        ax.set_ylabel("share of the site's values", fontsize=8)
        suppressed = []
        for site, release in sorted(sites.items()):
            counts, values = release["histograms"][f][g], release["site_cells"][f][g]
            if values == 0:
                continue  # no values here
            if values is None or not complete(counts, values):  # None: the cell suppressed
                suppressed.append(site)
                continue
            ax.stairs([c / sum(counts) for c in counts],
                      [e * unit.scale for e in edges[f][g]], label=site)
        if suppressed:
            ax.text(0.01, 0.98, "suppressed bins, not drawn: " + ", ".join(suppressed),
                    transform=ax.transAxes, va="top", fontsize=7, style="italic",
                    color=SUPPRESSED)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    save_grid(fig, axes, len(cells), folder / "site-distributions.png")
    return ["site-distributions.png"]
