"""Data discovery: what a site holds, in counts that its policy lets leave, so that a
researcher can ask "how many chest CTs with a segmentation are there?" across the fleet before
asking for a study (phase 13).

A site's **collection summary** counts its catalog's series by eight dimensions
(:data:`DIMENSIONS`: modality, body part, manufacturer, sex, age band, study year, and whether
the series has a current segmentation and current features), one table for each dimension and
one for each pair of them, plus totals (series, studies, patients, series with an *accepted*
segmentation, series with features). Its agent publishes it through this module's rule, on the
schedule its policy sets (``discovery_every_hours``), and at once after the policy changes.

The site policy's ``discovery`` decides what leaves (the GA4GH Beacon v2 granularities):

* ``off`` (the default): nothing; a summary published before is withdrawn at the hub.
* ``boolean``: each cell says only that it holds at least ``discovery_min_count`` series.
* ``count``: each cell's count, rounded to the nearest ``discovery_round_to``; a cell under
  ``discovery_min_count`` is left out (default: at least 10, rounded to 10).

Nothing else leaves: no identifier, no date finer than a year, no age finer than ten years.
The hub answers a cohort-language query from the summaries (:func:`answer`): a query on one
or two dimensions is summed over the matching published cells, and the answer states the
rounding; a query on more dimensions, or on a field no summary holds, is refused with the
reason (the summary holds tables of at most two dimensions, so that small cells stay few).

    summary = publishable(collect(catalog_url), policy)   # None with discovery off
    answer(summaries_by_site, definition.where)           # per site and in total
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date
from typing import Any

from radflow.errors import ConfigurationError

# dimension -> (the cohort-language field it answers, what it is)
DIMENSIONS: dict[str, tuple[str, str]] = {
    "modality": ("modality", "DICOM Modality"),
    "body_part": ("body_part", "BodyPartExamined"),
    "manufacturer": ("manufacturer", "scanner Manufacturer"),
    "sex": ("patient_sex", "PatientSex"),
    "age_band": ("age_years", "age at the study, in bands of 10 years"),
    "year": ("study_date", "the study's year"),
    "segmented": ("has_result:SEG", "has a current segmentation (yes/no)"),
    "features": ("has_result:FEATURES", "has current features (yes/no)"),
}
FIELD_DIMENSION = {field: dim for dim, (field, _) in DIMENSIONS.items()}
UNKNOWN = "unknown"
AGE_STEP = 10
MAX_CELLS = 5000  # per table: a summary is bounded (the hub refuses a bigger one)
RETRY_SECONDS = 300.0  # after a summary that could not be made or was refused


class NotAnswerable(ConfigurationError):
    """A query that the summaries cannot answer (its reason names the fix)."""


# -- at the site: the raw counts ------------------------------------------------------------
def _band(age: float | None) -> str:
    if age is None or age < 0:
        return UNKNOWN
    low = min(int(age // AGE_STEP) * AGE_STEP, 90)
    return "90+" if low >= 90 else f"{low}-{low + AGE_STEP - 1}"


def _text(value: str | None, upper: bool = False) -> str:
    text = (value or "").strip()[:64]
    return (text.upper() if upper else text) or UNKNOWN


def collect(catalog_url: str) -> dict[str, Any]:
    """The site's exact counts (they never leave as they are): each series as its cell of
    :data:`DIMENSIONS`, counted, and the totals."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult, Series, Study
    from radflow.enums import ResultKind, ResultStatus
    from radflow.results.current import current_units

    with session_scope(catalog_url) as session:
        units = current_units()  # (the rule's SQL is the costly part: asked once)
        found = session.exec(select(units.c.id, units.c.source_series_uid, units.c.kind,
                                    units.c.segment)).all()
        current_segs = {i for i, _, kind, _ in found if kind == ResultKind.SEG.value}
        seg = {uid for _, uid, kind, _ in found if kind == ResultKind.SEG.value}
        featured = {uid for _, uid, _, segment in found if segment is not None}
        accepted = {uid for i, uid in session.exec(
            select(col(DerivedResult.id), col(DerivedResult.source_series_uid)).where(
                col(DerivedResult.kind) == ResultKind.SEG,
                (col(DerivedResult.status) == ResultStatus.ACCEPTED)
                | (col(DerivedResult.algorithm) == "correction"))) if i in current_segs}
        rows = session.exec(select(Series.series_uid, Series.modality, Series.body_part,
                                   Series.manufacturer, Series.patient_sex, Series.age_years,
                                   Series.study_date)).all()
        studies = session.exec(select(func.count()).select_from(Study)).one()
        patients = session.exec(select(func.count(func.distinct(Study.patient_pk)))).one()
    cells: Counter[tuple[str, ...]] = Counter()
    for uid, modality, body_part, maker, sex, age, day in rows:
        cells[(_text(modality, True), _text(body_part, True), _text(maker), _text(sex, True),
               _band(age), str(day.year) if day else UNKNOWN,
               "yes" if uid in seg else "no", "yes" if uid in featured else "no")] += 1
    return {"cells": cells, "totals": {
        "series": len(rows), "studies": int(studies), "patients": int(patients),
        "accepted_segmentations": sum(1 for r in rows if r[0] in accepted),
        "with_features": sum(1 for r in rows if r[0] in featured)}}


# -- what leaves ------------------------------------------------------------------------------
def _publish(count: int, granularity: str, min_count: int, round_to: int) -> int | bool | None:
    """One cell as the policy lets it leave; None: left out."""
    if count < min_count:
        return None
    if granularity == "boolean":
        return True
    return max(round_to, int((count + round_to / 2) // round_to) * round_to)


def publishable(raw: dict[str, Any], policy: Any) -> dict[str, Any] | None:
    """The summary the site's policy lets leave (None with ``discovery: off``): every table of
    one and of two dimensions, each cell rounded or made a yes, small cells left out, and the
    rule that was applied."""
    granularity = policy.discovery
    if granularity == "off":
        return None
    rule = {"granularity": granularity, "min_count": policy.discovery_min_count,
            "round_to": policy.discovery_round_to}

    def out(count: int) -> int | bool | None:
        return _publish(count, granularity, rule["min_count"], rule["round_to"])

    names = list(DIMENSIONS)
    tables: dict[str, list[list[Any]]] = {}
    for size in (1, 2):
        for dims in itertools.combinations(range(len(names)), size):
            counts: Counter[tuple[str, ...]] = Counter()
            for cell, n in raw["cells"].items():
                counts[tuple(cell[i] for i in dims)] += n
            rows = [[*key, value] for key, n in sorted(counts.items())
                    if (value := out(n)) is not None]
            tables["+".join(names[i] for i in dims)] = rows[:MAX_CELLS]
    totals = {k: v for k, n in raw["totals"].items() if (v := out(n)) is not None}
    return {"rule": rule, "totals": totals, "tables": tables}


def rule_text(rule: dict[str, Any]) -> str:
    """The rounding, said: stated with every answer."""
    if rule.get("granularity") == "boolean":
        return f"yes/no only; yes means at least {rule['min_count']} series"
    return (f"counts under {rule['min_count']} left out, the others rounded to the nearest "
            f"{rule['round_to']}")


# -- at the hub: answering a query from the summaries -------------------------------------------
def _fields(node: dict[str, Any]) -> set[str]:
    if "field" in node:
        return {node["field"]}
    key, value = next(iter(node.items()))
    if key in ("all", "any"):
        return set().union(*(_fields(v) for v in value)) if value else set()
    if key == "not":
        return _fields(value)
    return {f"has_result:{'FEATURES' if value in ('FEATURES', 'SR') else value}"}


def dimensions_of(where: dict[str, Any]) -> list[str]:
    """The summary dimensions a (canonical) cohort filter uses, in table order.

    Raises:
        NotAnswerable: it uses a field that no summary holds.
    """
    dims = set()
    for field in _fields(where):
        if field not in FIELD_DIMENSION:
            held = ", ".join(sorted(f for f in FIELD_DIMENSION if ":" not in f))
            raise NotAnswerable(f"the collection summaries do not hold {field!r}",
                                fix=f"ask on {held}, or has_result SEG/FEATURES; or ask the "
                                    "sites in a study")
        dims.add(FIELD_DIMENSION[field])
    if len(dims) > 2:
        raise NotAnswerable(f"the query uses {len(dims)} dimensions ({', '.join(sorted(dims))});"
                            " the summaries hold tables of at most two",
                            fix="ask on two of them at a time, or ask the sites in a study")
    return [d for d in DIMENSIONS if d in dims]


def _edges(dim: str, value: str) -> tuple[Any, Any] | None:
    """The lowest and highest value a band or a year stands for (None: unknown)."""
    if value == UNKNOWN:
        return None
    if dim == "age_band":
        low = int(value.split("-")[0].rstrip("+"))
        return float(low), float(low + AGE_STEP) - 1e-9 if low < 90 else 200.0
    year = int(value)
    return date(year, 1, 1), date(year, 12, 31)


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "eq":
        return bool(have == want)
    if op == "ne":
        return bool(have != want)
    if op == "in":
        return have in want
    if op == "not_in":
        return have not in want
    if op == "contains":
        return str(want) in str(have)
    if op == "between":
        return bool(want[0] <= have <= want[1])
    return bool({"lt": have < want, "lte": have <= want, "gt": have > want,
                 "gte": have >= want}[op])


def _condition(node: dict[str, Any], dim: str, value: str) -> bool:
    op, want = node["op"], node["value"]
    if op == "exists":
        return (value != UNKNOWN) == bool(want)
    if dim in ("age_band", "year"):
        edges = _edges(dim, value)
        if edges is None:
            return op in ("ne", "not_in")
        if dim == "year":
            want = [date.fromisoformat(w) for w in want] if isinstance(want, list) \
                else date.fromisoformat(want)
        low, high = (_compare(op, edge, want) for edge in edges)
        if low != high:
            step = "10 years" if dim == "age_band" else "a year"
            raise NotAnswerable(f"{node['field']} {op} {node['value']} splits a band of the "
                                f"summaries ({dim} {value}: {step} each)",
                                fix="ask on the bands' edges (ages in tens, whole years)")
        return low
    if value == UNKNOWN:
        return op in ("ne", "not_in")
    if dim == "manufacturer":
        value = value.casefold()  # (text values are case-folded in a canonical filter)
    return _compare(op, value, want)


def holds(node: dict[str, Any], cell: dict[str, str]) -> bool:
    """Whether a (canonical) cohort filter holds for a summary cell (dimension -> value)."""
    if "field" in node:
        dim = FIELD_DIMENSION[node["field"]]
        return _condition(node, dim, cell[dim])
    key, value = next(iter(node.items()))
    if key == "all":
        return all(holds(v, cell) for v in value)
    if key == "any":
        return any(holds(v, cell) for v in value)
    if key == "not":
        return not holds(value, cell)
    dim = FIELD_DIMENSION[f"has_result:{'FEATURES' if value in ('FEATURES', 'SR') else value}"]
    return cell[dim] == "yes"


def site_answer(summary: dict[str, Any], where: dict[str, Any],
                dims: list[str]) -> dict[str, Any]:
    """One site's answer from its summary: ``count`` (granularity count) or ``exists``."""
    rule = summary["rule"]
    if not dims:
        total = summary["totals"].get("series")
        cells = [total] if total is not None else []
    else:
        cells = [row[-1] for row in summary["tables"].get("+".join(dims), [])
                 if holds(where, dict(zip(dims, row[:-1], strict=True)))]
    if rule["granularity"] == "boolean":
        return {"exists": any(cells), "rule": rule_text(rule)}
    return {"count": int(sum(cells)), "cells": len(cells), "rule": rule_text(rule)}


def answer(summaries: dict[str, dict[str, Any]], where: dict[str, Any]) -> dict[str, Any]:
    """A query's answer per site and in total (the total counts the sites that give counts;
    a site that says only yes or no is said apart).

    Raises:
        NotAnswerable: see :func:`dimensions_of` and :func:`holds`.
    """
    dims = dimensions_of(where)
    sites = {site: site_answer(summary, where, dims) for site, summary in sorted(
        summaries.items())}
    counted = [a["count"] for a in sites.values() if "count" in a]
    return {"dimensions": dims, "sites": sites, "total": sum(counted),
            "sites_counted": len(counted),
            "sites_yes": sorted(s for s, a in sites.items() if a.get("exists")),
            "note": "each site's count is a sum of its published cells, each rounded as its "
                    "rule says: the total may differ from the exact count by that rounding"}


# -- at the site: publishing ------------------------------------------------------------------
def published_path(site_root: Any) -> Any:
    """What this site published last, exactly as it left (for its steward to read)."""
    return site_root / "federation" / "discovery-published.json"


def publish(ctx: Any, client: Any, actor: str = "radflow:agent") -> str | None:
    """Publish the site's summary as its policy says (or withdraw the one published before,
    with ``discovery: off``; None where there is nothing to do). The audit event
    (``discovery.published`` or ``discovery.withdrawn``: the rule, the summary's hash and its
    number of cells) is written before the summary leaves, and the summary kept as it left.

    Raises:
        HubUnavailable: the hub did not answer (published on a later try).
        FederationError: the hub refused it.
    """
    import json

    from radflow import audit
    from radflow.errors import FederationError
    from radflow.federation.client import BUSY
    from radflow.federation.policy import load_policy
    from radflow.hashing import digest

    root = ctx.paths.root
    summary = publishable(collect(ctx.catalog_url), load_policy(root))
    path = published_path(root)
    if summary is None and not path.exists():
        return None  # never published: nothing to withdraw
    body = summary or {"rule": None}
    audit.record(ctx.catalog_url, actor=actor, subject=f"site:{ctx.name}",
                 action="discovery.published" if summary else "discovery.withdrawn",
                 detail={"rule": body["rule"], "hash": digest(body),
                         "cells": sum(len(t) for t in body.get("tables", {}).values())})
    answer = client.post("/discovery", body)
    if answer.status_code in BUSY:
        raise client.unavailable(answer, "the collection summary")
    if answer.status_code != 200:
        raise FederationError(f"the hub answered HTTP {answer.status_code} to the collection "
                              "summary", fix="see the hub's log (a hub older than discovery "
                                             "answers 404)")
    if summary is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(summary, indent=1))
    return str(answer.json().get("status"))


class Publisher:
    """When a site's agent publishes its summary: at once when the policy's discovery settings
    changed (so within a poll of `radflow site policy set`), then every
    ``discovery_every_hours``; after a failure, again in :data:`RETRY_SECONDS`."""

    def __init__(self, ctx: Any, client: Any, actor: str, logger: Any) -> None:
        self.ctx, self.client, self.actor, self.logger = ctx, client, actor, logger
        self.rule: tuple[Any, ...] | None = None  # the settings published under last
        self.due = 0.0
        self.mtime = -1  # the policy file's, when last looked at

    def step(self) -> bool:
        """Publish if due; returns whether the policy file changed since the last step.

        Raises:
            HubUnavailable: the hub did not answer (tried again once it is back).
        """
        import time

        from radflow.federation.client import HubUnavailable
        from radflow.federation.policy import load_policy, policy_path

        root = self.ctx.paths.root
        try:
            mtime = policy_path(root).stat().st_mtime_ns
        except OSError:
            mtime = 0
        changed, self.mtime = mtime != self.mtime, mtime
        policy = load_policy(root)
        rule = (policy.discovery, policy.discovery_min_count, policy.discovery_round_to,
                policy.discovery_every_hours)
        if rule == self.rule and time.monotonic() < self.due:
            return changed
        self.rule, self.due = None, time.monotonic() + 5.0
        try:
            status = publish(self.ctx, self.client, self.actor)
        except HubUnavailable:
            raise
        except Exception:  # a summary that cannot be made or is refused: logged, tried later
            self.logger.warning("the collection summary was not published", exc_info=True)
            self.rule, self.due = rule, time.monotonic() + RETRY_SECONDS
            return changed
        if status:
            self.logger.info("collection summary (discovery %s): %s", policy.discovery, status)
        self.rule, self.due = rule, time.monotonic() + policy.discovery_every_hours * 3600
        return changed
