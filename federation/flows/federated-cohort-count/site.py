"""The site part of federated-cohort-count: count what a cohort selects in this site's catalog.

"Series" means image series (radflow.cohorts.images): the SEGs, SRs and other derived objects
that radflow or a workstation made from a series are not counted, neither in the denominator
nor in the cohort's count.

It returns the site-local result (which stays at the site) and, separately, the aggregate that
the egress gate checks before anything leaves."""

from __future__ import annotations

from typing import Any


def count_cohort(cohort: dict[str, Any], site: str | None = None) -> dict[str, Any]:
    from radflow.catalog.db import session_scope
    from radflow.cohorts.definition import CohortDefinition
    from radflow.cohorts.images import count_image_series
    from radflow.runtime import site_runtime

    definition = CohortDefinition.parse(cohort)
    with session_scope(site_runtime(site).catalog_url) as session:
        total = count_image_series(session)
        matching = count_image_series(session, definition)
    return {"local": {"cohort": definition.content_hash, "matching": int(matching)},
            "release": {"n": int(total), "matching": int(matching)}}
