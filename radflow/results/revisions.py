"""How a revision of a SEG is numbered and named: one rule, used by the worklist, the review
history and audit log, Explore and ``radflow results``.

A clinician's correction saved in the worklist's editor is a SEG *revision*: a new SEG whose
ContentLabel is ``CORRECTION`` and whose SeriesNumber is :data:`SERIES_BASE` + its number. The
revisions of one case are numbered 1, 2, 3... in the order they were saved (a revision of a
revision goes on counting), and each is named after the SEG the case reviews (the model's):
"revision 2 of radflow-abdomen-demo 1.0.0". The number lives in the SEG itself (so any reader of
Orthanc finds it) and, once a decision takes a revision, in its result's ``detail``.

A corrected SEG made elsewhere (a workstation) has no number: it is "correction of <the SEG>".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CONTENT_LABEL = "CORRECTION"  # the ContentLabel of a revision SEG
SERIES_BASE = 9100  # a revision's SeriesNumber is SERIES_BASE + its number
CORRECTION_ALGORITHM = "correction"  # the algorithm of a result that holds a correction


def number_of(ds: Any) -> int | None:
    """The revision number a SEG header carries (None: not a numbered revision)."""
    if ds.get("ContentLabel") != CONTENT_LABEL:
        return None
    try:
        number = int(ds.get("SeriesNumber")) - SERIES_BASE
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def next_number(existing: Iterable[int | None]) -> int:
    """The number of the next revision of a case, given the numbers of its revisions."""
    return 1 + max((n for n in existing if n), default=0)


def title(number: int | None, of: str) -> str:
    """A revision's name: ``revision 2 of <the SEG>`` (``correction of <the SEG>`` without a
    number: a workstation's)."""
    return f"revision {number} of {of}" if number else f"correction of {of}"


def result_titles(rows: Iterable[Any], parents: dict[int, Any] | None = None) -> dict[int, str]:
    """What to call each result (by id): ``<algorithm> <version>``, and for a correction its
    revision's name after the result it corrects (looked up in ``rows`` and ``parents``)."""
    rows = list(rows)
    by_id = {r.id: r for r in rows} | (parents or {})
    names: dict[int, str] = {}
    for r in rows:
        if r.algorithm != CORRECTION_ALGORITHM:
            names[r.id] = f"{r.algorithm} {r.version}"
            continue
        detail = json.loads(r.detail or "{}")
        parent = by_id.get(r.parent_id or detail.get("corrects"))
        of = f"{parent.algorithm} {parent.version}" if parent is not None else "a SEG"
        names[r.id] = title(detail.get("revision"), of)
    return names


def parent_ids(rows: Iterable[Any]) -> set[int]:
    """The ids of the results that the corrections among ``rows`` correct (to load with
    them for :func:`result_titles`)."""
    found = set()
    for r in rows:
        if r.algorithm == CORRECTION_ALGORITHM:
            parent = r.parent_id or json.loads(r.detail or "{}").get("corrects")
            if parent:
                found.add(int(parent))
    return found
