"""De-identified export benchmark: `radflow export run` of a cohort to a folder vs a plain
download of the same instances from Orthanc, in the same run (issue 26: at least 100
instances per second on this machine).

    .venv/bin/python bench/bench_export.py [--cases 20] [--matrix 512]

A temporary site is started; synthetic CT studies (512x512 slices by default) are sent and
cataloged; a cohort of them and an export project (every option of the issue) are made. Then,
alternating A B A B:

  A  the plain download: every instance of the cohort's series fetched from Orthanc four at a
     time (the export's own fetcher) and written to a folder as it came;
  B  the export: fetched the same way, de-identified (PS3.15 Annex E with the options), written
     with its manifest (a SHA-256 per file).

Printed: each rate in instances per second, the means, and the ratio B/A.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from radflow.data.push import push
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.synth import synthesize

OPTIONS = ["retain-longitudinal-modified-dates", "retain-patient-characteristics",
           "clean-descriptors", "clean-structured-content"]


def plain_download(ctx, plan: dict, out: Path) -> int:
    from concurrent.futures import ThreadPoolExecutor

    FETCHERS = 4

    orthanc = ctx.orthanc_client()
    ids = [i for s in plan["series"] for i in orthanc.series_instances(s["orthanc_id"])]
    out.mkdir(parents=True)

    def one(instance_id: str) -> None:
        (out / f"{instance_id}.dcm").write_bytes(orthanc.instance_file(instance_id))

    with ThreadPoolExecutor(FETCHERS) as pool:
        list(pool.map(one, ids))
    return len(ids)


def export(ctx, project: str, cohort: str, out: Path) -> int:
    from radflow.export import run

    entry = run.request(ctx.paths.root, ctx.catalog_url, project=project, cohort=cohort,
                        target=f"folder:{out}", actor="bench", requires_steward=False)
    done = run.execute(ctx.paths.root, ctx.catalog_url, ctx.orthanc_client(), entry["id"],
                       actor="bench")
    return done["result"]["instances"]


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--matrix", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["RADFLOW_HOME"] = str(home)
        data = Path(tmp) / "data"
        synthesize(data, args.cases, matrix=args.matrix)
        manager = SiteManager(RadflowSettings(home=home))
        manager.up("bench-export", stable_age=1)
        ctx = manager.context("bench-export")
        try:
            sent = push([data], client=ctx.orthanc_client(), host="127.0.0.1",
                        port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
            from radflow.catalog.db import session_scope
            from radflow.cohorts.definition import CohortDefinition
            from radflow.cohorts.store import save_cohort
            from radflow.export import projects
            from radflow.export.run import plan

            deadline = time.monotonic() + 600
            while True:
                with session_scope(ctx.catalog_url) as session:
                    save_cohort(session, "bench", CohortDefinition.parse(
                        {"where": {"field": "modality", "op": "eq", "value": "CT"}}),
                        replace=True)
                what = plan(ctx.catalog_url, "bench")
                if sum(s["instances"] for s in what["series"]) >= sent.sent:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the catalog did not catch up within 10 minutes")
                time.sleep(1)
            projects.create(ctx.paths.root, "bench", options=OPTIONS)
            n = what["instances"]
            print(f"{n} instances in {len(what['series'])} series of {args.matrix}x"
                  f"{args.matrix}")
            a, b = [], []
            for round_ in range(2):
                for name, fn, into in (("A", plain_download, a), ("B", export, b)):
                    out = Path(tmp) / f"{name}{round_}"
                    began = time.perf_counter()
                    count = fn(ctx, what, out) if name == "A" else fn(ctx, "bench", "bench", out)
                    seconds = time.perf_counter() - began
                    into.append(count / seconds)
                    print(f"{name}{round_ + 1}  {count} instances in {seconds:6.2f} s  "
                          f"{count / seconds:6.0f} inst/s")
                    shutil.rmtree(out)
            ma, mb = statistics.mean(a), statistics.mean(b)
            print(f"plain download  mean {ma:6.0f} inst/s")
            print(f"export          mean {mb:6.0f} inst/s   ratio {mb / ma:.2f}   target >= 100 "
                  f"inst/s: {'met' if mb >= 100 else 'MISSED'}")
        finally:
            manager.down("bench-export")


if __name__ == "__main__":
    main()
