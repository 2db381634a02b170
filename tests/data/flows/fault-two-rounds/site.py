"""The site part of fault-two-rounds: the cohort's count in this site's catalog, each round."""

from __future__ import annotations

from typing import Any


def count_round(cohort: dict[str, Any], round: str | None = None,
                site: str | None = None, pad: list[float] | None = None,
                study: str | None = None) -> dict[str, Any]:
    from sqlmodel import func, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Series
    from radflow.cohorts.definition import CohortDefinition
    from radflow.cohorts.query import count_series
    from radflow.runtime import site_runtime

    definition = CohortDefinition.parse(cohort)
    with session_scope(site_runtime(site).catalog_url) as session:
        total = session.exec(select(func.count()).select_from(Series)).one()
        matching = count_series(session, definition)
    if round == "second" and len(pad or []) != 40_000:
        raise ValueError("the second round's parameters did not arrive whole")
    return {"local": {"round": round, "matching": int(matching), "study": study},
            "release": {"n": int(total), "matching": int(matching)}}
