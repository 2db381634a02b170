"""The long fuzz run: hundreds of mutated real files into a fresh site, each on its own C-STORE
association or STOW-RS request; then the catalog must equal Orthanc, series by series.

    .venv/bin/python bench/bench_fuzz.py [--files 400] [--seed 7]

Prints what was sent and taken by each path, how long the catalog took to settle after the last
file (the baseline: Orthanc's own intake time of the same files, measured in the same run), the
series by status, and the findings by code.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pydicom.data

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def sources(tmp: Path) -> list[Path]:
    from radflow.data.push import is_dicom_file
    from radflow.synth import synthesize

    found = [p for p in sorted(PYDICOM_FILES.glob("*.dcm")) if is_dicom_file(p)
             and p.stat().st_size < 2_000_000]
    phantom = synthesize(tmp / "phantom", 2, seed=12, matrix=32)
    return found + [p for c in phantom for p in sorted(c.dicom_dir.glob("*.dcm"))[:6]]


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from sqlmodel import func, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Finding, Series
    from radflow.catalog.sync import wait_in_step
    from radflow.data.fuzz import build_corpus, send_each_dicom, send_each_stow
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RADFLOW_HOME"] = str(tmp / "home")
        corpus = build_corpus(sources(tmp), tmp / "corpus", args.files, args.seed)
        manager = SiteManager(RadflowSettings(home=tmp / "home"))
        manager.up("fuzz", stable_age=2)
        ctx = manager.context("fuzz")
        try:
            orthanc = ctx.orthanc_client()
            began = time.perf_counter()
            by_dicom = send_each_dicom([f.path for f in corpus[0::2]], host="127.0.0.1",
                                       port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
            by_stow = send_each_stow([f.path for f in corpus[1::2]], orthanc)
            sent = time.perf_counter() - began
            info = wait_in_step(orthanc, ctx.catalog_url, timeout=900)
            settled = time.perf_counter() - began - sent
            healthy = manager.status("fuzz").state
            with session_scope(ctx.catalog_url) as session:
                statuses = dict(session.exec(select(Series.status, func.count())
                                             .group_by(Series.status)).all())
                codes = dict(session.exec(select(Finding.code, func.count(
                    func.distinct(Finding.series_pk))).group_by(Finding.code)).all())
        finally:
            manager.down("fuzz")
    mutations = Counter(f.mutation for f in corpus)
    taken = {"c-store": sum(v is None for v in by_dicom.values()),
             "stow-rs": sum(v is None for v in by_stow.values())}
    print(f"{len(corpus)} files ({dict(mutations)})")
    print(f"sent in {sent:.1f} s: C-STORE {taken['c-store']}/{len(by_dicom)} taken, "
          f"STOW-RS {taken['stow-rs']}/{len(by_stow)} taken; site {healthy}")
    print(f"catalog {info['catalog_series']} series = Orthanc {info['orthanc_series']} series: "
          f"{info['catalog_series'] == info['orthanc_series']}; settled {settled:.1f} s after the "
          f"last file (ratio to sending: {settled / sent:.2f})")
    print(f"series by status: { {str(k): v for k, v in statuses.items()} }")
    print(f"series by finding: {dict(sorted(codes.items()))}")
    print(json.dumps({"files": len(corpus), "taken": taken, "sent_s": round(sent, 1),
                      "settled_s": round(settled, 1), "catalog_series": info["catalog_series"],
                      "orthanc_series": info["orthanc_series"], "errors": len(info["errors"]),
                      "healthy": healthy}))


if __name__ == "__main__":
    main()
