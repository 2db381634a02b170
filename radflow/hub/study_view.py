"""What the study page and the study report show, built once for both: each site's state and
release (as tables, from the version's release schema), the combined result as tables with
units, and the parameters in words. The raw JSON is kept for a toggle, never shown first.

    view = study_view(found, release_schema(engine, found["version"]))
    # -> {"sites": [...], "tables": [...], "scalars": [...], "params": [...], ...}
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Engine

from radflow.federation.tables import (
    combined_tables,
    params_rows,
    release_summary,
    release_tables,
    round_schema,
    value_at,
)

STATUS = {  # a site's state, as the page says it
    "waiting": "waiting: the coordinator run has not queued its job yet",
    "queued": "queued: waiting for the site's agent to take it",
    "taken": "taken: the site runs it",
    "released": "released", "refused": "refused",
    "invalid_release": "invalid release: the hub refused what the site posted",
    "missing": "missing: no answer by the deadline",
    "not_queued": "not queued: the coordinator run ended before it queued the jobs"}


def release_schema(engine: Engine, version_hash: str | None) -> Any:
    """The release schema of a published version (None for one this hub does not hold)."""
    from radflow.federation.release import ReleaseSchema
    from radflow.hub import registry

    for version in registry.versions(engine):
        if version.hash == version_hash:
            return ReleaseSchema.model_validate(
                json.loads(version.signed)["manifest"]["release_schema"])
    return None


def site_views(found: dict[str, Any], schema: Any) -> list[dict[str, Any]]:
    """One entry per site (a running study: its newest job): its state in words, its refusal,
    its release as one line and as tables, and the release's JSON for a toggle."""
    newest: dict[str, dict[str, Any]] = {}
    for entry in found.get("sites", []):
        newest[entry["site"]] = entry  # (jobs come by round, then site)
    params = found.get("params") or {}
    views = []
    for name in sorted(newest):
        entry = newest[name]
        release = entry.get("release")
        view = {**entry, "state": STATUS.get(entry["status"], entry["status"]),
                "summary": release_summary(release), "tables": [], "raw": ""}
        if release is not None:
            view["tables"] = release_tables(
                release, {**params, **(entry.get("params") or {})},
                round_schema(schema, release, entry.get("round")))
            view["raw"] = json.dumps(release, sort_keys=True)
        views.append(view)
    return views


def suppressed_cells(views: list[dict[str, Any]], params: dict[str, Any]) -> list[dict]:
    """Per site, the feature and segment cells of its released histograms with bins its gate
    suppressed: the charts name that site as suppressed there and draw nothing for it."""
    features, segments = params.get("features") or [], params.get("segments") or []
    out = []
    for view in views:
        histograms = (view.get("release") or {}).get("histograms")
        if not isinstance(histograms, list):
            continue
        cells = [f"{feature} / {segment}" for f, feature in enumerate(features)
                 for g, segment in enumerate(segments)
                 if None in (value_at(histograms, (f, g)) or [])]
        if cells:
            out.append({"site": view["site"], "cells": cells})
    return out


def study_view(found: dict[str, Any], schema: Any) -> dict[str, Any]:
    """Everything the study page and the report render, from a study's state or result."""
    tables, scalars = combined_tables(found.get("combined") or {})
    params = found.get("params") or {}
    sites = site_views(found, schema)
    return {"sites": sites, "tables": tables, "scalars": scalars,
            "suppressed": suppressed_cells(sites, params),
            "params": params_rows(params),
            "params_json": json.dumps(params, indent=2, sort_keys=True),
            "combined_json": json.dumps(found.get("combined", {}), indent=2, sort_keys=True)}
