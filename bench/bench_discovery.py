"""A site's collection summary for data discovery (radflow.federation.discovery) on a catalog of
100,000 series (or more): what making it costs the site, and how big it is.

    .venv/bin/python bench/bench_discovery.py [--series 100000]

Prints the median time of making the summary as the agent does (`collect`: every series as its
cell, with the current-segmentation and current-features flags from the one rule of
radflow.results.current; then `publishable`: the one- and two-dimension tables, rounded), and a
baseline measured in the same run: one SQL ``GROUP BY`` over the six plain dimensions (the
floor of any such count; no result flags, no tables). Also the summary's size as posted, and the
time of answering a two-dimension query from it at the hub.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from bench_cohort import build, load

from radflow.catalog.db import get_engine, optimize
from radflow.cohorts.definition import parse_short
from radflow.federation.discovery import answer, collect, publishable
from radflow.federation.policy import SitePolicy

GROUP_BY = ("SELECT modality, body_part, manufacturer, patient_sex, "
            "CAST(age_years / 10 AS INTEGER), substr(study_date, 1, 4), count(*) FROM series "
            "GROUP BY 1, 2, 3, 4, 5, 6")


def median(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'catalog.db'}"
        began = time.perf_counter()
        build(url, args.series)
        optimize(url)
        print(f"catalog of {args.series:,} series built in {time.perf_counter() - began:.1f} s;"
              f" {load()}")
        engine = get_engine(url)

        def baseline() -> int:
            with engine.connect() as connection:
                return len(connection.execute(text(GROUP_BY)).all())

        base, groups = median(baseline, args.repeat)
        policy = SitePolicy(discovery="count")
        made, raw = median(lambda: collect(url), args.repeat)
        tables, summary = median(lambda: publishable(raw, policy), args.repeat)
        size = len(json.dumps(summary).encode())
        cells = sum(len(t) for t in summary["tables"].values())
        where = parse_short(["modality=CT", "body_part=CHEST"]).where
        asked, said = median(lambda: answer({f"site{i}": summary for i in range(40)}, where),
                             args.repeat)
    print(f"baseline GROUP BY over 6 dimensions: {base * 1000:.0f} ms ({groups:,} groups)")
    print(f"collect (cells with result flags): {made * 1000:.0f} ms "
          f"({len(raw['cells']):,} cells); publishable: {tables * 1000:.0f} ms")
    print(f"summary: {size / 1024:.0f} KiB as posted, {cells:,} published cells in "
          f"{len(summary['tables'])} tables")
    print(f"ratio (collect + publishable) / baseline: {(made + tables) / base:.2f}x")
    print(f"a two-dimension query over 40 sites' summaries: {asked * 1000:.1f} ms "
          f"(CT chest: {said['total']:,} in total)")


if __name__ == "__main__":
    main()
