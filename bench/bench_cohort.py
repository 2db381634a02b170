"""Cohort queries over a catalog of 100,000 (or 1,000,000) series (target: under 50 ms per
query), on SQLite and on PostgreSQL (a throwaway cluster) in one run.

    .venv/bin/python bench/bench_cohort.py [--series 1000000] [--engines sqlite,postgresql]

Prints, per query, the median time of `count` and of listing the first 100 matches as radflow
answers them (from the catalog's columnar copy, radflow.cohorts.columns, which the ingest flow
keeps current), and two baselines measured in the same run: the same count in SQL (what radflow
answers while the copy is being rebuilt, and for small catalogs) and the naive way (every series
loaded, filtered in Python). Every answer is checked against the naive count.

The catalog holds derived results as a site's pipeline and reviews leave them (a SEG for each
SEG series' source: mostly draft, some accepted, rejected, corrected with a correction, or
superseded by a recomputation; SRs with feature segments for most SEGs, a rejected one's too),
so ``has_result`` (a *current* result, radflow.results.current) is answered from the copy's
has_result part; the naive baseline applies the rule in Python (its ``current``). After the
queries, a review decision makes that part stale: the run times making it again (what the next
``has_result`` query, or the next refresh, pays once) and the query in SQL meanwhile. The
machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, insert, text
from sqlmodel import select

from radflow.catalog.db import get_engine, optimize, session_scope
from radflow.catalog.models import DerivedResult, FeatureValue, Patient, Series, Study
from radflow.cohorts import CohortDefinition, columns, count_series, select_series, to_sql
from radflow.enums import ResultStatus
from radflow.results import store
from radflow.results.current import current
from radflow.settings import get_settings

QUERIES = {
    "CT": {"field": "modality", "op": "eq", "value": "CT"},
    "thin abdomen CT, 2020-2023": {"all": [
        {"field": "modality", "op": "eq", "value": "CT"},
        {"field": "body_part", "op": "eq", "value": "ABDOMEN"},
        {"field": "slice_thickness", "op": "lte", "value": 1.5},
        {"field": "study_date", "op": "between", "value": ["2020-01-01", "2023-12-31"]}]},
    "vendor in-list + age": {"all": [
        {"field": "manufacturer", "op": "in", "value": ["SIEMENS", "Philips"]},
        {"field": "age_years", "op": "gte", "value": 65}]},
    "description contains": {"field": "series_description", "op": "contains", "value": "portal"},
    "CT without SEG yet": {"all": [
        {"field": "modality", "op": "eq", "value": "CT"},
        {"not": {"has_result": "SEG"}}]},
    "has SR": {"has_result": "SR"},
    "CT with SEG, no SR yet": {"all": [
        {"field": "modality", "op": "eq", "value": "CT"}, {"has_result": "SEG"},
        {"not": {"has_result": "SR"}}]},
    "any of (3T MR, contrast CT)": {"any": [
        {"all": [{"field": "modality", "op": "eq", "value": "MR"},
                 {"field": "field_strength", "op": "eq", "value": 3}]},
        {"all": [{"field": "modality", "op": "eq", "value": "CT"},
                 {"field": "contrast", "op": "eq", "value": True}]}]},
}
VENDORS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA", "Canon Medical Systems",
           "FUJIFILM", "Hitachi", "United Imaging", "Neusoft", "Agfa"]
DESCRIPTIONS = ["ABD PORTAL VENOUS 1.0 B30f", "THORAX 1.5 lung", "HEAD NATIVE 5.0", "T1 MPRAGE",
                "T2 FLAIR", "DWI b1000", "ABD NATIVE 3.0", "PET WB", "CTA AORTA", "PELVIS portal"]


def build(url: str, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with session_scope(url) as session:
        patients = [{"orthanc_id": f"p{i}", "patient_id": f"P{i}", "sex": rng.choice("FM")}
                    for i in range(n // 4)]
        session.execute(insert(Patient), patients)
        studies = [{"orthanc_id": f"st{i}", "study_uid": f"1.{i}", "patient_pk": i // 2 + 1}
                   for i in range(n // 2)]
        session.execute(insert(Study), studies)
        rows = []
        for i in range(n):
            modality = rng.choices(["CT", "MR", "PT", "CR", "SEG"], [50, 30, 5, 5, 10])[0]
            rows.append({
                "orthanc_id": f"s{i}", "series_uid": f"1.2.{i}", "study_pk": i // 2 + 1,
                "study_uid": f"1.{i // 2}", "modality": modality,
                "body_part": rng.choice(["ABDOMEN", "CHEST", "HEAD", "PELVIS", None]),
                "manufacturer": rng.choice(VENDORS), "series_description": rng.choice(DESCRIPTIONS),
                "slice_thickness": rng.choice([0.625, 1.0, 1.25, 1.5, 2.5, 3.0, 5.0]),
                "field_strength": rng.choice([1.5, 3.0]) if modality == "MR" else None,
                "kvp": rng.choice([100.0, 120.0]) if modality == "CT" else None,
                "study_date": date(2010, 1, 1) + timedelta(days=rng.randrange(16 * 365)),
                "patient_sex": rng.choice(["F", "M"]), "age_years": rng.uniform(18, 95),
                "contrast": rng.random() < 0.4, "num_instances": rng.randrange(1, 600),
                "source_series_uid": f"1.2.{i - 1}" if modality == "SEG" else None,
            })
        session.execute(insert(Series), rows)
        add_results(session, [r["source_series_uid"] for r in rows if r["source_series_uid"]],
                    rng)


def add_results(session, sources: list[str], rng: random.Random) -> None:
    """A SEG of each source series, its correction or recomputation, SRs with two segments."""
    results, features = [], []

    def add(**row) -> int:
        results.append({"id": len(results) + 1, "key": f"k{len(results) + 1}", "version": "1",
                        "parent_id": None, "derived_from_id": None, **row})
        return len(results)

    for uid in sources:
        status = rng.choices(["draft", "accepted", "rejected", "superseded", "corrected"],
                             [60, 15, 10, 10, 5])[0]
        seg = add(kind="SEG", source_series_uid=uid, algorithm="model", status=status)
        if status == "corrected":
            seg = add(kind="SEG", source_series_uid=uid, algorithm="correction", parent_id=seg,
                      status="accepted")
        elif status == "superseded" and rng.random() < 0.5:  # recomputed by force
            seg = add(kind="SEG", source_series_uid=uid, algorithm="model", parent_id=seg,
                      status="draft")
        if rng.random() < 0.6:  # quantified (a rejected SEG's SR stays draft: not current)
            sr = add(kind="SR", source_series_uid=uid, algorithm="pyradiomics",
                     derived_from_id=seg, status="draft")
            features += [{"result_pk": sr, "source_series_uid": uid, "segment_number": number,
                          "segment_label": label, "feature": "original_shape_VoxelVolume",
                          "value": 1.0, "unit": "mm3"}
                         for number, label in ((1, "liver"), (2, "spleen"))]
    for table, rows in ((DerivedResult, results), (FeatureValue, features)):
        for start in range(0, len(rows), 50_000):
            session.execute(insert(table), rows[start:start + 50_000])
    if session.get_bind().dialect.name == "postgresql":  # ids given: move the sequence on
        session.execute(text("SELECT setval(pg_get_serial_sequence('result', 'id'), "
                             "(SELECT max(id) FROM result))"))


def naive(url: str, definition: CohortDefinition) -> int:
    """Baseline: load every series (plain rows) and filter in Python with the same semantics."""
    with get_engine(url).connect() as connection:
        rows = connection.execute(select(Series.__table__)).all()
        results = connection.execute(select(DerivedResult.__table__)).all()
        segments: dict[int, list[str]] = {}
        for pk, label in connection.execute(select(FeatureValue.result_pk,
                                                   FeatureValue.segment_label)):
            segments.setdefault(pk, []).append(label)
    with_current = {(series, kind) for series, kind, _, _ in current(results, segments)}

    def ok(node, r) -> bool:
        if "field" in node:
            v, op, want = getattr(r, node["field"]), node["op"], node["value"]
            if isinstance(v, str) and node["field"] not in ("modality", "body_part", "patient_sex"):
                v = v.casefold()
            if isinstance(v, date):
                v = v.isoformat()
            if isinstance(v, str) and node["field"] == "study_date":
                v = v[:10]
            if v is None:
                return op in ("ne", "not_in")
            return {"eq": lambda: v == want, "lte": lambda: v <= want, "gte": lambda: v >= want,
                    "in": lambda: v in want, "contains": lambda: want in v,
                    "between": lambda: want[0] <= v <= want[1]}[op]()
        key, value = next(iter(node.items()))
        if key == "all":
            return all(ok(c, r) for c in value)
        if key == "any":
            return any(ok(c, r) for c in value)
        if key == "not":
            return not ok(value, r)
        return (r.series_uid, value) in with_current

    return sum(ok(definition.where, r) for r in rows)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def run(url: str, n: int, repeat: int) -> float:
    """Build a catalog of ``n`` series at ``url`` and time the queries; the slowest ms."""
    began = time.perf_counter()
    build(url, n)
    optimize(url)  # what every ingest run does (SQLite: ANALYZE when it grew)
    if not url.startswith("sqlite"):
        with get_engine(url).connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    print(f"catalog of {n:,} series built in {time.perf_counter() - began:.1f} s "
          f"({get_engine(url).dialect.name}); {load()}")
    copy = columns.refresh(url)  # what the ingest flow does after each burst
    print(f"columnar copy: {copy}")
    print(f"{'query':<30} {'matches':>8} {'count ms':>9} {'list100 ms':>11} {'SQL count ms':>13} "
          f"{'naive ms':>9} {'SQL/copy':>9}")
    worst = 0.0
    for name, where in QUERIES.items():
        definition = CohortDefinition.parse({"where": where})
        sql = select(func.count()).select_from(Series).where(to_sql(definition.where))
        with session_scope(url) as session:
            copy = columns.current(session.connection())
            assert copy is not None or n < get_settings().columns_from
            if copy is not None and "has_result" in str(where):  # the copy's own part answers
                assert columns.result_masks(session.connection(), copy) is not None
            count = count_series(session, definition)
            t_count = timed(lambda s=session, d=definition: count_series(s, d), repeat)
            t_list = timed(lambda s=session, d=definition: select_series(s, d, limit=100), repeat)
            assert session.exec(sql).one() == count, f"{name}: the copy and SQL disagree"
            t_sql = timed(lambda s=session, q=sql: s.exec(q).one(), min(repeat, 3))
        began = time.perf_counter()
        assert naive(url, definition) == count, f"{name}: SQL and the naive filter disagree"
        t_naive = (time.perf_counter() - began) * 1000
        worst = max(worst, t_count, t_list)
        print(f"{name:<30} {count:>8} {t_count:>9.1f} {t_list:>11.1f} {t_sql:>13.1f} "
              f"{t_naive:>9.0f} {t_sql / max(t_count, 1e-3):>8.1f}x")
    verdict = "met" if worst < 50 else "MISSED"
    print(f"slowest query: {worst:.1f} ms (target under 50 ms: {verdict}); "
          f"ratio to target {worst / 50:.2f}; {load()}")
    after_a_review(url)
    return worst


def after_a_review(url: str) -> None:
    """A review decision makes the copy's has_result part stale: the next has_result query makes
    it again (once), or the next refresh does."""
    definition = CohortDefinition.parse({"where": QUERIES["CT with SEG, no SR yet"]})
    sql = select(func.count()).select_from(Series).where(to_sql(definition.where))
    drafts = iter(store_drafts(url))
    with session_scope(url) as session:
        store.set_status(session, next(drafts), ResultStatus.REJECTED, by="bench")
    with session_scope(url) as session:
        began = time.perf_counter()
        first = count_series(session, definition)
        t_first = (time.perf_counter() - began) * 1000
        t_next = timed(lambda: count_series(session, definition), 3)
        assert first == session.exec(sql).one(), "after a review: the copy and SQL disagree"
    with session_scope(url) as session:
        store.set_status(session, next(drafts), ResultStatus.ACCEPTED, by="bench")
    refreshed = columns.refresh(url)
    print(f"after a review decision: the next has_result query {t_first:.0f} ms (makes the "
          f"has_result part again), then {t_next:.1f} ms; or the next refresh: {refreshed}")


def store_drafts(url: str) -> list[int]:
    with session_scope(url) as session:
        return list(session.exec(select(DerivedResult.id).where(
            DerivedResult.kind == "SEG", DerivedResult.status == ResultStatus.DRAFT).limit(2)))


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--engines", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (a throwaway cluster)")
    args = parser.parse_args()
    worst = {}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                worst[engine] = run(f"sqlite:///{Path(tmp) / 'catalog.db'}", args.series,
                                    args.repeat)
        else:
            from radflow.postgres import TemporaryCluster, sync_url

            with TemporaryCluster() as cluster:
                worst[engine] = run(sync_url(cluster.create_database("catalog")), args.series,
                                    args.repeat)
    print("slowest per engine: " + ", ".join(f"{k} {v:.1f} ms" for k, v in worst.items()))


if __name__ == "__main__":
    main()
