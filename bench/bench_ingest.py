"""Ingest benchmark: DICOM C-STORE into Orthanc alone vs Orthanc + catalog, in the same run, on
SQLite and on PostgreSQL (Prefect, the catalog and Orthanc's index; a throwaway cluster).

    .venv/bin/python bench/bench_ingest.py [--cases 40] [--matrix 512] [--stable-age 1]
                                           [--engines sqlite,postgresql]

A temporary site is started per engine. The same synthetic CT studies (512x512 slices by default) are sent
three times with DCMTK storescu (TCP_NODELAY on both sides):

  (an untimed warm-up round, then)  A1 B1 A2 B2, where
  A   Orthanc alone (watcher stopped)       B  Orthanc + catalog (watcher + ingest flow runs)
  and each figure is the mean of its two rounds (the machine is shared and noisy).

Printed: Orthanc's intake rate in each phase; in B also the end-to-end rate (from the first
instance sent until the catalog holds every instance), and the same with the site's fixed
settle time (Orthanc's StableAge + the watcher's poll interval) taken out; and the ratios to A.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import IngestRequest, Series, WatcherState
from radflow.data.push import push
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.site.components import component
from radflow.synth import synthesize
from radflow.watcher.core import CURSOR, WatcherConfig

WATCHER = component("watcher")


def send(ctx, data: Path) -> tuple[int, float]:
    result = push([data], client=ctx.orthanc_client(), host="127.0.0.1",
                  port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
    assert not result.failed and result.verified, result.failed[:3]
    return result.sent, result.seconds


def empty_orthanc(ctx) -> None:
    client = ctx.orthanc_client()
    for patient in client.patients():
        client.delete("patients", patient)


def cataloged_instances(ctx) -> int:
    with session_scope(ctx.catalog_url) as session:
        return session.exec(select(func.coalesce(func.sum(Series.num_instances), 0))).one()


def phase_alone(manager: SiteManager, ctx, data: Path) -> float:
    WATCHER.process(ctx).stop()
    empty_orthanc(ctx)
    n, seconds = send(ctx, data)
    return n / seconds


def fresh_watcher(manager: SiteManager, ctx) -> None:
    """Empty Orthanc, and restart the watcher at the end of its change feed (the phase before
    left changes that are not this phase's)."""
    empty_orthanc(ctx)
    with session_scope(ctx.catalog_url) as session:
        state = session.get(WatcherState, CURSOR) or WatcherState(name=CURSOR)
        state.last_seq = ctx.orthanc_client().last_change()
        session.add(state)
    manager.restart(ctx.config.name, "watcher")


def phase_with_catalog(manager: SiteManager, ctx, data: Path, expected: int) -> dict:
    fresh_watcher(manager, ctx)
    began = time.perf_counter()
    n, seconds = send(ctx, data)
    while cataloged_instances(ctx) < expected:
        time.sleep(0.1)
        if time.perf_counter() - began > 600:
            raise TimeoutError("the catalog did not catch up within 10 minutes")
    total = time.perf_counter() - began
    with session_scope(ctx.catalog_url) as session:
        runs = len({r.flow_run_id for r in session.exec(select(IngestRequest)) if r.flow_run_id})
    return {"n": n, "intake": n / seconds, "push_s": seconds, "total_s": total, "runs": runs}


def measure(home: Path, data: Path, n: int, stable_age: int, engine: str) -> dict:
    """A1 B1 A2 B2 on a new site whose databases are on ``engine``."""
    manager = SiteManager(RadflowSettings(home=home))
    cluster = None
    urls: dict[str, str] = {}
    if engine == "postgresql":  # Prefect, the catalog and Orthanc's index
        from radflow.postgres import TemporaryCluster

        cluster = TemporaryCluster().start()
        urls = {"database_url": cluster.create_database("prefect"),
                "catalog_url": cluster.create_database("catalog"),
                "orthanc_index_url": cluster.create_database("orthanc")}
    name = f"bench-{engine[:2]}"
    manager.up(name, stable_age=stable_age, **urls)
    ctx = manager.context(name)
    try:
        phase_alone(manager, ctx, data)  # warm-up: caches, Orthanc's first writes
        a1 = phase_alone(manager, ctx, data)
        b1 = phase_with_catalog(manager, ctx, data, n)
        a2 = phase_alone(manager, ctx, data)
        b2 = phase_with_catalog(manager, ctx, data, n)
    finally:
        manager.down(name)
        if cluster is not None:
            cluster.stop()
    return {"a1": a1, "a2": a2, "b1": b1, "b2": b2, "a": statistics.mean([a1, a2]),
            "intake": statistics.mean([b1["intake"], b2["intake"]]),
            "total_s": statistics.mean([b1["total_s"], b2["total_s"]]),
            "runs": f"{b1['runs']}+{b2['runs']}"}


def report(engine: str, r: dict, n: int, settle: float) -> None:
    a, b1, b2 = r["a"], r["b1"], r["b2"]
    e2e = n / r["total_s"]
    e2e_net = n / (r["total_s"] - settle)
    print(f"[{engine}]")
    print(f"Orthanc alone          A1 {r['a1']:6.0f} inst/s   A2 {r['a2']:6.0f} inst/s   "
          f"mean {a:6.0f} inst/s")
    print(f"Orthanc + catalog      B1 {b1['intake']:6.0f} inst/s   B2 {b2['intake']:6.0f} inst/s   "
          f"mean {r['intake']:6.0f} inst/s   ratio {r['intake'] / a:.2f}  (Orthanc's intake while "
          "cataloging runs)")
    print(f"                       end to end {e2e:6.0f} inst/s   ratio {e2e / a:.2f}  "
          f"(all {n} cataloged {r['total_s']:.1f} s after the first was sent; {r['runs']} ingest "
          "runs)")
    print(f"                       without the {settle:.0f} s settle time: {e2e_net:6.0f} inst/s   "
          f"ratio {e2e_net / a:.2f}")
    intake = r["intake"] / a
    print(f"target: with cataloging on, Orthanc keeps at least 80% of its own rate -> {intake:.0%} "
          f"({'met' if intake >= 0.8 else 'MISSED'}); end to end {e2e / a:.0%} for this burst")


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--stable-age", type=int, default=1)
    parser.add_argument("--engines", default="sqlite,postgresql",
                        help="the databases to measure on, in this run (comma-separated)")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["RADFLOW_HOME"] = str(home)
        data = Path(tmp) / "data"
        began = time.perf_counter()
        cases = synthesize(data, args.cases, seed=5, matrix=args.matrix)
        n = sum(c.slices for c in cases)
        print(f"{args.cases} CT studies, {n} instances of {args.matrix}x{args.matrix} "
              f"synthesized in {time.perf_counter() - began:.0f} s")
        results = {engine: measure(home, data, n, args.stable_age, engine) for engine in engines}
    settle = args.stable_age + WatcherConfig().poll_seconds
    for engine, r in results.items():
        report(engine, r, n, settle)
    if {"sqlite", "postgresql"} <= results.keys():
        s, p = results["sqlite"], results["postgresql"]
        print(f"PostgreSQL / SQLite: Orthanc alone {p['a'] / s['a']:.2f}, with the catalog "
              f"{p['intake'] / s['intake']:.2f}, end to end {s['total_s'] / p['total_s']:.2f}")


if __name__ == "__main__":
    main()
