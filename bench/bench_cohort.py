"""Cohort queries over a catalog of 100,000 (or 1,000,000) series (target: under 50 ms per
query), on SQLite and on PostgreSQL (a throwaway cluster) in one run.

    .venv/bin/python bench/bench_cohort.py [--series 1000000] [--engines sqlite,postgresql]

Prints, per query, the median time of `count` and of listing the first 100 matches as radflow
answers them (from the catalog's columnar copy, radflow.cohorts.columns, which the ingest flow
keeps current), and two baselines measured in the same run: the same count in SQL (what radflow
answers while the copy is being rebuilt, and for small catalogs) and the naive way (every series
loaded, filtered in Python). Every answer is checked against the naive count.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, insert
from sqlmodel import select

from radflow.catalog.db import get_engine, optimize, session_scope
from radflow.catalog.models import DerivedResult, Patient, Series, Study
from radflow.cohorts import CohortDefinition, columns, count_series, select_series, to_sql
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
        results = [{"key": f"seg-{r['source_series_uid']}", "kind": "SEG",  # has_result: current
                    "source_series_uid": r["source_series_uid"], "algorithm": "model",
                    "version": "1", "status": rng.choice(["draft"] * 8 + ["accepted", "rejected"])}
                   for r in rows if r["source_series_uid"]]
        for start in range(0, len(results), 50_000):
            session.execute(insert(DerivedResult), results[start:start + 50_000])


def naive(url: str, definition: CohortDefinition) -> int:
    """Baseline: load every series (plain rows) and filter in Python with the same semantics."""
    with get_engine(url).connect() as connection:
        rows = connection.execute(select(Series.__table__)).all()
        seg_sources = {r.source_series_uid for r in connection.execute(
            select(DerivedResult.__table__)) if r.kind == "SEG" and r.status != "rejected"}

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
        return r.series_uid in seg_sources

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
          f"({get_engine(url).dialect.name})")
    copy = columns.refresh(url)  # what the ingest flow does after each burst
    print(f"columnar copy: {copy}")
    print(f"{'query':<30} {'matches':>8} {'count ms':>9} {'list100 ms':>11} {'SQL count ms':>13} "
          f"{'naive ms':>9} {'SQL/copy':>9}")
    worst = 0.0
    for name, where in QUERIES.items():
        definition = CohortDefinition.parse({"where": where})
        sql = select(func.count()).select_from(Series).where(to_sql(definition.where))
        with session_scope(url) as session:
            assert columns.current(session.connection()) is not None \
                or n < get_settings().columns_from
            count = count_series(session, definition)
            t_count = timed(lambda s=session, d=definition: count_series(s, d), repeat)
            t_list = timed(lambda s=session, d=definition: select_series(s, d, limit=100), repeat)
            assert session.exec(sql).one() == count, f"{name}: the copy and SQL disagree"
            t_sql = timed(lambda s=session, q=sql: s.exec(q).one(), repeat)
        t_naive = timed(lambda d=definition: naive(url, d), 1)
        assert naive(url, definition) == count, f"{name}: SQL and the naive filter disagree"
        worst = max(worst, t_count, t_list)
        print(f"{name:<30} {count:>8} {t_count:>9.1f} {t_list:>11.1f} {t_sql:>13.1f} "
              f"{t_naive:>9.0f} {t_sql / max(t_count, 1e-3):>8.1f}x")
    verdict = "met" if worst < 50 else "MISSED"
    print(f"slowest query: {worst:.1f} ms (target under 50 ms: {verdict}); "
          f"ratio to target {worst / 50:.2f}")
    return worst


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
