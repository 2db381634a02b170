"""What federation adds to a trivial job, measured in one run on one machine:

    .venv/bin/python bench/bench_federation.py [--rounds 7] [--sites 3]

A hub (`radflow hub up`: Prefect server, worker, federation API) and N sites (each with its own
Orthanc, Prefect, worker and agent, and one small synthetic series), all on loopback. The job is
federated-cohort-count's site part. Printed, as medians over the rounds:

- local call: the site part called in this process (the floor);
- local flow run: the same site part as a `federated-job` flow run on one site's own Prefect,
  started directly (what a site would pay to run it itself: the baseline);
- federated: `run_study` over all N sites: the job queued at the hub, long-polled by each agent,
  verified, run as that flow run, gated, posted, and combined at the hub;
- federated via the coordinator flow: the same as a flow run on the hub's Prefect
  (`radflow study run`, what a coordinator does).

Target: federated minus local flow run under 5 s (median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "federation" / "flows" / "federated-cohort-count"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_phases(api, run_id: str, began: datetime, seen: datetime) -> dict[str, float]:
    """When a flow run reached each state, and when its caller saw it end: seconds after
    ``began`` (the caller's start). SCHEDULED is its creation; PENDING, a worker took it;
    RUNNING, its process started and loaded the flow; COMPLETED, its body ended."""
    phases: dict[str, float] = {}
    for state, at in api.state_history(run_id):
        phases.setdefault({"SCHEDULED": "created"}.get(state, state.lower()),
                          (at - began).total_seconds())
    phases["seen done"] = (seen - began).total_seconds()
    return phases


def median_of(fn, rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), times


def main() -> int:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sites", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        os.environ["RADFLOW_HOME"] = str(home)
        from radflow.catalog.sync import wait_in_step
        from radflow.cohorts.definition import parse_short
        from radflow.data.push import push
        from radflow.federation.client import join
        from radflow.federation.policy import SitePolicy, save_policy
        from radflow.hub import study_jobs
        from radflow.hub.home import HubHome
        from radflow.hub.studies import run_study
        from radflow.settings import RadflowSettings
        from radflow.site import SiteManager
        from radflow.synth import synthesize

        radflow = [str(Path(sys.executable).parent / "radflow")]

        def cli(*argv: str) -> dict:
            out = subprocess.run([*radflow, *argv, "--json"], capture_output=True, text=True,
                                 check=True, timeout=600)
            return json.loads(out.stdout)

        began = time.monotonic()
        cli("hub", "up", "--port", str(free_port()), "--prefect-port", str(free_port()))
        hub = HubHome.of(home)
        version = cli("publish", str(PACKAGE))["hash"]
        manager = SiteManager(RadflowSettings(home=home))
        names = [f"site{i + 1}" for i in range(args.sites)]
        try:
            for i, name in enumerate(names):
                join(hub.url(), name, cli("hub", "site", "add", name)["code"],
                     home / "sites" / name)
                manager.up(name, stable_age=1)
                ctx = manager.context(name)
                save_policy(ctx.paths.root, SitePolicy(approved=[version], job_mode="auto",
                                                       min_cohort=1, min_cell=1))
                case = synthesize(tmp / f"data-{name}", 1, seed=900 + i, matrix=32)[0]
                push([case.dicom_dir], client=ctx.orthanc_client(), host="127.0.0.1",
                     port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
                wait_in_step(ctx.orthanc_client(), ctx.catalog_url, timeout=180)
            print(f"set-up: a hub and {len(names)} sites in {time.monotonic() - began:.0f} s")
            params = {"cohort": parse_short(["modality=CT"]).canonical()}
            engine = hub.engine()

            def federated() -> None:
                result = run_study(engine, hub.root, "federated-cohort-count", params, names,
                                   deadline_s=120, poll=0.05)
                bad = [s for s in result["sites"] if s["status"] != "released"]
                assert not bad, bad

            federated()  # warm: every site installs the bundle and imports the flow once
            first = manager.context(names[0])
            api = first.prefect()
            from radflow.flows.federated_job import bundle_dir


            local_phases: list[dict[str, float]] = []

            def local_flow_run() -> None:
                began = datetime.now(UTC)
                run = api.create_flow_run(f"federated-job/{first.name}", {
                    "job_id": uuid.uuid4().hex, "version_hash": version,
                    "entrypoint": "site.py:count_cohort", "params": params,
                    "site": first.name})
                assert api.wait(run.id, timeout=120, poll=0.1).ok
                local_phases.append(run_phases(api, run.id, began, datetime.now(UTC)))

            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "bench_site_part", bundle_dir(first.paths.root, version) / "site.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            from radflow.site.registration import site_prefect

            def local_call() -> None:
                with site_prefect(first):
                    module.count_cohort(params["cohort"], site=first.name)

            call, _ = median_of(local_call, args.rounds)
            local, local_all = median_of(local_flow_run, args.rounds)
            fed, fed_all = median_of(federated, args.rounds)

            coord_phases: list[dict[str, float]] = []

            def coordinator() -> None:
                began = datetime.now(UTC)
                out = cli("study", "run", "federated-cohort-count", "--cohort",
                          str(cohort_file), "--deadline", "120")
                assert all(s["status"] == "released" for s in out["sites"]), out
                hub_api = hub.prefect()
                phases = run_phases(hub_api, out["flow_run"].rstrip("/").rsplit("/", 1)[-1],
                                    began, datetime.now(UTC))
                posted = [j.posted_at for j in study_jobs.study_jobs(engine, out["study"], 0)]
                phases["sites answered"] = (max(posted).replace(tzinfo=UTC)
                                            - began).total_seconds()
                coord_phases.append(phases)

            cohort_file = tmp / "cohort.json"
            cohort_file.write_text(json.dumps(params["cohort"]))
            coord, coord_all = median_of(coordinator, args.rounds)
        finally:
            for name in names:
                if name in manager.sites():
                    manager.down(name)
            subprocess.run([*radflow, "hub", "down"], capture_output=True, check=False)

    print(f"site part, called in process:                 {call * 1000:8.1f} ms")
    print(f"site part, as a local flow run (baseline):    {local:8.2f} s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in local_all)})")
    print(f"federated over {len(names)} sites (run_study):          {fed:8.2f} s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in fed_all)})")
    print(f"federated via the hub's coordinator flow:     {coord:8.2f} s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in coord_all)})")
    print("where the time goes, seconds from the start (median over the runs):")
    for label, runs in (("local flow run", local_phases), ("coordinator flow", coord_phases)):
        keys = sorted({k for r in runs for k in r}, key=lambda k: statistics.median(
            [r[k] for r in runs if k in r]))
        print(f"  {label}: " + ", ".join(
            f"{k} {statistics.median([r[k] for r in runs if k in r]):.2f}" for k in keys))
    added = fed - local
    print(f"added by federation: {added:.2f} s median ({fed / local:.2f}x the local flow run); "
          f"target under 5 s: {'met' if added < 5 else 'NOT met'}")
    print(f"added with the coordinator flow on top: {coord - local:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
