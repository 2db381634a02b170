"""The federated analytics flows, measured in one run on one machine:

    .venv/bin/python bench/bench_federated_stats.py [--sites 3] [--cases 4]

A hub and N sites (each with its own Orthanc, Prefect, worker and agent), each with a few
synthetic CT studies segmented and quantified by the real pipeline. Then each analytics flow
runs as a study. Printed:

- the baseline: one site part (feature statistics, round ``span``) as a ``federated-job`` flow
  run started directly on one site's Prefect (what a site would pay to compute it itself);
- for each study, every round: its seconds, the ratio to the baseline, and the bytes each site
  released (the JSON that left it);
- the bytes released per site and study, against the bytes of the values the site holds (what
  pooling would have shipped: 8 bytes per value).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "federation" / "flows"
FEATURES = ["original_firstorder_Mean", "original_shape_VoxelVolume"]
SEGMENTS = ["liver", "spleen", "kidney"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=4)
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
        cli("hub", "up", "--port", str(free_port()), "--prefect-port", str(free_port()),
            "--web-port", str(free_port()), "--idp-port", str(free_port()))
        hub = HubHome.of(home)
        flows = ("federated-feature-statistics", "federated-harmonization-check",
                 "federated-logistic-regression")
        versions = {f: cli("publish", str(FLOWS / f))["hash"] for f in flows}
        manager = SiteManager(RadflowSettings(home=home))
        names = [f"site{i + 1}" for i in range(args.sites)]
        vendors: set[str] = set()
        held: dict[str, int] = {}
        try:
            for i, name in enumerate(names):
                join(hub.url(), name, cli("hub", "site", "add", name)["code"],
                     home / "sites" / name)
                manager.up(name, stable_age=1)
                ctx = manager.context(name)
                save_policy(ctx.paths.root, SitePolicy(
                    approved=list(versions.values()), job_mode="auto", min_cohort=2,
                    min_cell=1, max_parameters_ratio=1.0))
                cases = synthesize(tmp / f"data-{name}", args.cases, seed=700 + 13 * i,
                                   matrix=64)
                vendors |= {c.manufacturer for c in cases}
                push([c.dicom_dir for c in cases], client=ctx.orthanc_client(),
                     host="127.0.0.1", port=ctx.config.ports.orthanc_dicom,
                     called_aet=ctx.config.aet)
                wait_in_step(ctx.orthanc_client(), ctx.catalog_url, timeout=180)
                api = ctx.prefect()
                run = api.create_flow_run(f"segment-and-quantify/{name}", {
                    "site": name, "series_uids": [c.series_uid for c in cases],
                    "max_parallel": 2})
                assert api.wait(run.id, timeout=1800).ok, f"{name}: the pipeline failed"
                held[name] = len(cases) * len(FEATURES) * len(SEGMENTS) * 8
            print(f"set-up: a hub and {len(names)} sites, {args.cases} quantified cases each, "
                  f"in {time.monotonic() - began:.0f} s")
            cohort = parse_short(["modality=CT"]).canonical()
            first = manager.context(names[0])
            api = first.prefect()
            stats_params = {"cohort": cohort, "features": FEATURES, "segments": SEGMENTS,
                            "bins": 64}

            def baseline() -> float:
                t = time.perf_counter()
                run = api.create_flow_run(f"federated-job/{first.name}", {
                    "job_id": uuid.uuid4().hex, "version_hash": versions[flows[0]],
                    "entrypoint": "site.py:feature_statistics",
                    "params": stats_params | {"round": "span"}, "site": first.name})
                assert api.wait(run.id, timeout=300, poll=0.05).ok
                return time.perf_counter() - t

            engine = hub.engine()
            studies = {
                flows[0]: stats_params,
                flows[1]: {"cohort": cohort, "features": FEATURES[:1], "segments": ["liver"],
                           "vendors": sorted(vendors)},
                flows[2]: {"cohort": cohort, "outcome": "sex_female",
                           "terms": [f"feature:{FEATURES[0]}@liver", "age"]}}
            results = {}
            for flow, params in studies.items():
                results[flow] = run_study(engine, hub.root, flow, params, names,
                                          deadline_s=300, poll=0.05)
            base_runs = [baseline() for _ in range(3)]  # after the studies: everything warm
            base = statistics.median(base_runs)
        finally:
            for name in names:
                if name in manager.sites():
                    manager.down(name)
            subprocess.run([*radflow, "hub", "down"], capture_output=True, check=False)

    print(f"baseline: one site part as a local flow run: {base:.2f} s median "
          f"(runs: {', '.join(f'{t:.2f}' for t in base_runs)})")
    for flow, result in results.items():
        refused = {s["site"]: s.get("refusal") for s in result["sites"]
                   if s["status"] != "released"}
        print(f"\n{flow}: {len(result['rounds'])} rounds"
              + (f"; not in: {refused}" if refused else ""))
        total = dict.fromkeys(names, 0)
        for i, done in enumerate(result["rounds"]):
            sizes = {site: v["bytes"] for site, v in done["sites"].items()}
            for site, size in sizes.items():
                total[site] += size
            print(f"  round {i} {done['round']:<11} {done['seconds']:6.2f} s  "
                  f"{done['seconds'] / base:5.2f}x the baseline  bytes per site: "
                  + ", ".join(f"{site} {size}" for site, size in sorted(sizes.items())))
        per_round = statistics.median(d["seconds"] for d in result["rounds"])
        print(f"  median round: {per_round:.2f} s ({per_round / base:.2f}x the baseline); "
              "released per site in all: " + ", ".join(
                  f"{site} {size} bytes" for site, size in sorted(total.items())))
    print("\nvalues each site holds for the feature statistics (what pooling would ship): "
          + ", ".join(f"{site} {size} bytes" for site, size in sorted(held.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
