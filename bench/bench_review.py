"""Review steps against their targets, measured in one run on one site:

    .venv/bin/python bench/bench_review.py [--reviews 20]

1. Waiting holds nothing: the memory (RSS, all the site's processes together) and the process
   count of a site with N reviews waiting, against the same site idle before they started
   (after it ran the same N cases without review once: the first runs grow Prefect's server
   and worker whether anything waits or not; the cold figure is printed too).
   Target: no extra process, under 50 MB more.
2. Deciding is quick: the time from a decision (the resume call) to the end of the case run,
   against the same case run without a review (model loaded, results recomputed).
   Target: under 10 s added.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil


def site_footprint(manager, ctx) -> tuple[int, int, dict[str, int]]:
    """(processes, total RSS bytes, RSS per component) of every process of the site
    (components and their children)."""
    pids: dict[int, str] = {}
    for component in manager.status(ctx.name).components:
        if component.pid:
            proc = psutil.Process(component.pid)
            for p in (proc, *proc.children(recursive=True)):
                pids[p.pid] = component.name
    per: dict[str, int] = {}
    for pid, name in pids.items():
        try:
            per[name] = per.get(name, 0) + psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return len(pids), sum(per.values()), per


def settle(manager, ctx, seconds: float = 45.0) -> tuple[int, int]:
    """The footprint once no flow-run process is left (ingest runs idle out after 30 s)."""
    deadline = time.monotonic() + seconds
    worker = next(c for c in manager.status(ctx.name).components if c.name == "worker")
    while time.monotonic() < deadline and psutil.Process(worker.pid).children():
        time.sleep(1)
    time.sleep(2)
    return site_footprint(manager, ctx)


def wait_state(api, run_id: str, wanted: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.flow_run_state(run_id).get("type")
        if state in wanted:
            return state
        time.sleep(0.25)
    raise TimeoutError(f"run {run_id} is not {wanted} after {timeout} s")


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=20)
    args = parser.parse_args()
    from radflow.catalog.sync import wait_in_step
    from radflow.data.push import push
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager
    from radflow.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RADFLOW_HOME"] = str(tmp / "home")
        cases = synthesize(tmp / "data", args.reviews + 1, seed=5000, matrix=48)
        manager = SiteManager(RadflowSettings(home=tmp / "home"))
        manager.up("bench", stable_age=1)
        ctx = manager.context("bench")
        try:
            orthanc = ctx.orthanc_client()
            push([tmp / "data"], client=orthanc, host="127.0.0.1",
                 port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
            wait_in_step(orthanc, ctx.catalog_url, timeout=600)
            refs = [orthanc.series_by_uid(c.series_uid) for c in cases]
            api = ctx.prefect()
            name = "segment-and-quantify-case/bench"
            cold = settle(manager, ctx)
            # the same cases once without review, so that the idle baseline is a site that has
            # run them (Prefect's server and worker grow on first use, waiting or not)
            warm_runs = [api.create_flow_run(name, {"series": ref, "site": "bench"}).id
                         for ref in refs[:-1]]
            for run_id in warm_runs:
                assert api.wait(run_id, timeout=600).ok
            idle = settle(manager, ctx)
            runs = []
            for ref in refs[:-1]:
                run = api.create_flow_run(name, {"series": ref, "site": "bench", "review": True})
                runs.append(run.id)
            for run_id in runs:
                wait_state(api, run_id, {"PAUSED"})
            waiting = settle(manager, ctx)

            without = []
            for _ in range(3):
                run = api.create_flow_run(name, {"series": refs[-1], "site": "bench",
                                                 "force": True})
                began = time.perf_counter()
                assert api.wait(run.id, timeout=300).ok
                without.append(time.perf_counter() - began)
            decided = []
            for run_id in runs[:5]:
                began = time.perf_counter()
                api.resume(run_id, {"decision": "accept", "reviewer": "bench"})
                assert api.wait(run_id, timeout=300, poll=0.25).ok
                decided.append(time.perf_counter() - began)
        finally:
            manager.down("bench")
    extra_mb = (waiting[1] - idle[1]) / 2**20
    print(f"0. idle before any case run: {cold[0]} processes, {cold[1] / 2**20:.0f} MB; after "
          f"{args.reviews} case runs without review: {idle[1] / 2**20:.0f} MB")
    print("   per component, idle (after the runs) -> waiting, MB: " + ", ".join(
        f"{k} {idle[2].get(k, 0) / 2**20:.0f}->{waiting[2].get(k, 0) / 2**20:.0f}"
        for k in sorted(set(idle[2]) | set(waiting[2]))))
    plain, after = statistics.median(without), statistics.median(decided)
    print(f"1. {args.reviews} reviews waiting: {waiting[0]} processes, "
          f"{waiting[1] / 2**20:.0f} MB; idle: {idle[0]} processes, {idle[1] / 2**20:.0f} MB; "
          f"{waiting[0] - idle[0]:+d} processes, {extra_mb:+.1f} MB (target: no extra "
          f"process, under 50 MB: {'met' if waiting[0] <= idle[0] and extra_mb < 50 else 'MISSED'})")
    print(f"2. decision to completion {after:.1f} s (median of {len(decided)}); the same case "
          f"run without review {plain:.1f} s; added {after - plain:+.1f} s (target under 10 s: "
          f"{'met' if after - plain < 10 else 'MISSED'})")
    print(json.dumps({"reviews": args.reviews, "cold": {"processes": cold[0], "rss": cold[1]},
                      "idle": {"processes": idle[0], "rss": idle[1]},
                      "waiting": {"processes": waiting[0], "rss": waiting[1]},
                      "decided_s": [round(x, 2) for x in decided],
                      "without_review_s": [round(x, 2) for x in without]}))


if __name__ == "__main__":
    main()
