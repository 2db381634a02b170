"""Studies on the hub: queue one job per site, wait for the releases (until the deadline), and
combine them. A site that refuses is reported with its code only; a site that does not answer
by the deadline is reported as missing; the others' results stand.

Results are hub artifacts under ``hub/studies/<id>/``: ``result.json`` and a bar chart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from radflow.hub import registry


def run_study(engine: Engine, folder: Path, name: str, params: dict[str, Any],
              sites: list[str] | None = None, deadline_s: float = 600.0,
              poll: float = 0.5, study_id: str | None = None,
              on_site: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Queue the study's jobs, wait for every site or the deadline, combine, write artifacts.
    ``on_site`` is told of each site's release or refusal as it arrives."""
    study, _ = registry.start_study(engine, name, params, sites, deadline_s, study_id)
    end = time.monotonic() + deadline_s
    told: set[str] = set()
    while True:
        rows = registry.study_jobs(engine, study.id)
        for job in rows:
            if job.status in ("released", "refused") and job.site not in told:
                told.add(job.site)
                if on_site is not None:
                    on_site(_entry(job))
        if len(told) == len(rows) or time.monotonic() >= end:
            break
        time.sleep(poll)
    per_site = [_entry(job) for job in rows]
    result = {"study": study.id, "flow": name, "version": study.version_hash,
              "params": params, "sites": per_site, "combined": combine(name, per_site),
              "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    out = folder / "studies" / study.id
    out.mkdir(parents=True, exist_ok=True)
    result["artifacts"] = [str(out / "result.json"), str(out / "result.png")]
    chart(result, out / "result.png")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _entry(job: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": job.site, "status": job.status
                             if job.status in ("released", "refused") else "missing"}
    if job.status == "refused":
        entry["refusal"] = job.refusal
    if job.status == "released":
        entry["release"] = json.loads(job.release)
    return entry


def combine(name: str, per_site: list[dict[str, Any]]) -> dict[str, Any]:
    """The cross-site answer. For a cohort count: the sum of the released counts; a count a site
    suppressed (under its min_cell) is shown as "<k" and makes the total a lower bound."""
    released = [s for s in per_site if s["status"] == "released"]
    if name != "federated-cohort-count":
        return {"sites_released": len(released)}
    known = [s["release"]["matching"] for s in released if s["release"]["matching"] is not None]
    suppressed = [s["site"] for s in released if s["release"]["matching"] is None]
    return {"matching": sum(known), "matching_is_lower_bound": bool(suppressed),
            "suppressed_at": suppressed, "series": sum(s["release"]["n"] for s in released),
            "sites_released": len(released),
            "sites_not_in": {s["site"]: s.get("refusal", "missing") for s in per_site
                             if s["status"] != "released"}}


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values, labels = [], [], []
    for s in result["sites"]:
        names.append(s["site"])
        value = (s.get("release") or {}).get("matching")
        values.append(value or 0)
        labels.append(str(value) if value is not None else
                      ("<k" if s["status"] == "released" else s.get("refusal", s["status"])))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    bars = ax.bar(names, values, color="#1f5fbf")
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{result['flow']} ({result['study']})")
    ax.set_ylabel("series selected")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
