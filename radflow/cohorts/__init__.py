"""Cohorts: portable JSON filters over the site catalog, with a content hash.

Example:
    ```python
    from radflow.catalog import session_scope
    from radflow.cohorts import CohortDefinition, count_series

    cohort = CohortDefinition.parse({"where": {"field": "modality", "op": "eq", "value": "CT"}})
    with session_scope(catalog_url) as session:
        print(cohort.content_hash, count_series(session, cohort))
    ```
"""

from radflow.cohorts.definition import FIELDS, CohortDefinition, parse_short
from radflow.cohorts.query import count_series, select_series, to_sql
from radflow.cohorts.store import delete_cohort, list_cohorts, load_cohort, save_cohort

__all__ = ["FIELDS", "CohortDefinition", "count_series", "delete_cohort", "list_cohorts",
           "load_cohort", "parse_short", "save_cohort", "select_series", "to_sql"]
