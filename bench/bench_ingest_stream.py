"""Ingest under a sustained stream (issue 27, item 3): 10,000 instances of 512x512 sent over 4
parallel DICOM associations, into Orthanc alone and into Orthanc + the catalog, in the same run,
on SQLite and on PostgreSQL (Prefect, the catalog and Orthanc's index; a throwaway cluster).

    .venv/bin/python bench/bench_ingest_stream.py [--instances 10000] [--slices 250]
        [--associations 4] [--stable-age 1] [--engines sqlite,postgresql]

The stream: a few synthetic CT series of ``--slices`` slices (512x512), copied with new UIDs and
patient IDs until it holds ``--instances`` instances (series of a clinical size; 40 of 250 by
default). Each association sends its share of the series one after another (one storescu per
series, TCP_NODELAY on both sides), all associations at once.

Per engine, on a new site, three phases: A1 B A2, where

  A  Orthanc alone (the watcher stopped): Orthanc's own rate, the instances over the stream's time;
  B  Orthanc + catalog (the watcher and its ingest runs), the same stream.

While B runs, the bench watches both ends, every 0.2 s: Orthanc's change feed (when each series
is reported ``StableSeries``) and the catalog (when each series' row holds all its instances).
Printed per engine: the catalog lag of every series (median, 95th percentile, max; target: every
series within 5 s of Orthanc calling it stable) and the end-to-end rate (from the first instance
sent until the catalog holds the last) as a ratio to Orthanc's own rate, the mean of A1 and A2
(target: at least 0.9 over the whole stream).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pydicom
from bench_ingest import empty_orthanc, fresh_watcher
from pydicom.uid import generate_uid
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import Series
from radflow.data.push import PROPOSE, c_store
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.site.components import component
from radflow.synth import synthesize

WATCHER = component("watcher")
POLL = 0.2
LAG_TARGET = 5.0
RATE_TARGET = 0.9


def make_stream(out: Path, instances: int, slices: int) -> list[list[Path]]:
    """Series of ``slices`` instances (copies of up to 4 synthesized ones with new UIDs and
    patient IDs) until ``instances`` are written; each series' files."""
    templates = synthesize(out / "templates", min(4, max(1, instances // slices)), seed=11,
                           matrix=512, slices=slices)
    series: list[list[Path]] = []
    count = 0
    while count < instances:
        k = len(series)
        template = templates[k % len(templates)]
        folder = out / "stream" / f"series_{k:03d}"
        folder.mkdir(parents=True)
        uids = {name: generate_uid(entropy_srcs=["bench-stream", str(k), name])
                for name in ("study", "series", "for")}
        files = []
        for path in sorted(template.dicom_dir.glob("*.dcm"))[:instances - count]:
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName = f"STREAM-{k:03d}", f"Stream^{k:03d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
            ds.FrameOfReferenceUID = uids["for"]
            ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-stream", str(k), path.name])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            files.append(folder / path.name)
            ds.save_as(files[-1], enforce_file_format=True)
        series.append(files)
        count += len(files)
    return series


def send_stream(ctx, series: list[list[Path]], associations: int) -> tuple[float, float]:
    """Send every series, ``associations`` at a time; (start, end) on the perf counter."""
    propose = PROPOSE.get(str(pydicom.dcmread(series[0][0], stop_before_pixels=True)
                              .file_meta.TransferSyntaxUID), "-x=")
    shares = [series[i::associations] for i in range(associations)]

    def send(share: list[list[Path]]) -> int:
        sent = 0
        for files in share:
            stored, rejected = c_store(files, host="127.0.0.1", port=ctx.config.ports.orthanc_dicom,
                                       called_aet=ctx.config.aet, calling_aet="RADFLOW",
                                       dcmtk_bin=Path("/usr/bin"), propose=propose)
            assert not rejected, list(rejected.items())[:3]
            sent += len(stored)
        return sent

    began = time.perf_counter()
    with ThreadPoolExecutor(associations) as pool:
        sent = sum(pool.map(send, shares))
    assert sent == sum(len(s) for s in series), sent
    return began, time.perf_counter()


def phase_alone(ctx, series: list[list[Path]], associations: int) -> tuple[float, dict]:
    """Orthanc's own rate (the watcher stopped), and the phase's CPU profile."""
    WATCHER.process(ctx).stop()
    empty_orthanc(ctx)
    before, children = cpu_by_kind(), os.times()
    began, ended = send_stream(ctx, series, associations)
    cpu = cpu_profile(before, children.children_user + children.children_system)
    return sum(len(s) for s in series) / (ended - began), {"wall": ended - began, **cpu}


class Observer(threading.Thread):
    """Watch Orthanc's change feed and the catalog: when each series became stable, and when
    its catalog row held all of its instances (perf-counter times)."""

    def __init__(self, ctx, expected: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.ctx, self.expected = ctx, expected
        self.stable: dict[str, float] = {}
        self.cataloged: dict[str, float] = {}
        self.since = ctx.orthanc_client().last_change()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        orthanc = self.ctx.orthanc_client()
        try:
            while len(self.cataloged) < len(self.expected):
                now = time.perf_counter()
                while True:
                    page = orthanc.changes(since=self.since, limit=1000)
                    for change in page["Changes"]:
                        if change["ChangeType"] == "StableSeries":
                            self.stable.setdefault(change["ID"], now)
                    self.since = page["Last"]
                    if page["Done"] or not page["Changes"]:
                        break
                with session_scope(self.ctx.catalog_url) as session:
                    rows = session.exec(select(Series.orthanc_id, Series.num_instances)).all()
                now = time.perf_counter()
                for oid, n in rows:
                    if oid in self.expected and n == self.expected[oid] and oid not in self.cataloged:
                        self.cataloged[oid] = now
                time.sleep(POLL)
        except BaseException as exc:  # noqa: BLE001 (reported by the phase, not lost in a thread)
            self.error = exc
        finally:
            self.done.set()


def kind(proc: psutil.Process) -> str:
    """What a process is, for the CPU profile."""
    line = " ".join(proc.info["cmdline"] or [])
    if proc.info["pid"] == os.getpid():
        return "bench (sender threads, observer)"
    if "radflow.forkserver" in line:  # the server, or a run it forked (same command line)
        parent = proc.parent()
        return "ingest flow run" if parent and "radflow.forkserver" in " ".join(
            parent.cmdline()) else "fork server"
    for marker, name in (("Orthanc", "Orthanc"), ("postgres", "PostgreSQL"),
                         ("radflow.watcher", "watcher"), ("prefect worker", "Prefect worker"),
                         ("prefect server", "Prefect server"), ("uvicorn", "Prefect server"),
                         ("radflow.agent", "agent"), ("prefect.engine", "ingest flow run")):
        if marker in line:
            return name
    return "other"


def cpu_by_kind() -> dict[int, tuple[str, float]]:
    """Every process's kind and CPU seconds (user + system) so far."""
    out = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        with contextlib.suppress(psutil.Error):
            if times is not None:
                out[proc.info["pid"]] = (kind(proc), times.user + times.system)
    return out


def cpu_profile(before: dict[int, tuple[str, float]], children_before: float) -> dict[str, float]:
    """CPU seconds by kind of process since ``before`` (storescu: the bench's ended children)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in cpu_by_kind().items():
        spent[name] = spent.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    times = os.times()
    spent["storescu"] = times.children_user + times.children_system - children_before
    return {k: v for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def series_ids(ctx, series: list[list[Path]]) -> dict[str, int]:
    """Orthanc's identifiers of the stream's series (computed from the UIDs), with their sizes."""
    import hashlib

    def orthanc_id(*uids: str) -> str:
        digest = hashlib.sha1("|".join(uids).encode()).hexdigest()
        return "-".join(digest[i:i + 8] for i in range(0, 40, 8))

    ids = {}
    for files in series:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        ids[orthanc_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID)] = len(files)
    return ids


def phase_with_catalog(manager: SiteManager, ctx, series: list[list[Path]],
                       associations: int) -> dict:
    fresh_watcher(manager, ctx)
    expected = series_ids(ctx, series)
    observer = Observer(ctx, expected)
    observer.start()
    before, children = cpu_by_kind(), os.times()
    began, sent = send_stream(ctx, series, associations)
    if not observer.done.wait(900) or observer.error:
        raise RuntimeError(f"the catalog did not catch up: {observer.error or 'timeout'} "
                           f"({len(observer.cataloged)} of {len(expected)} series)")
    cpu = cpu_profile(before, children.children_user + children.children_system)
    ended = max(observer.cataloged.values())
    missing = set(expected) - set(observer.stable)
    lags = sorted(observer.cataloged[s] - observer.stable[s] for s in expected if s in observer.stable)
    return {"intake": sum(expected.values()) / (sent - began), "total_s": ended - began,
            "send_s": sent - began, "lags": lags, "unseen_stable": len(missing), "cpu": cpu}


def measure(home: Path, series: list[list[Path]], args, engine: str) -> dict:
    manager = SiteManager(RadflowSettings(home=home))
    cluster = None
    urls: dict[str, str] = {}
    if engine == "postgresql":
        from radflow.postgres import TemporaryCluster

        cluster = TemporaryCluster().start()
        urls = {"database_url": cluster.create_database("prefect"),
                "catalog_url": cluster.create_database("catalog"),
                "orthanc_index_url": cluster.create_database("orthanc")}
    name = f"stream-{engine[:2]}"
    manager.up(name, stable_age=args.stable_age, **urls)
    ctx = manager.context(name)
    try:
        a1, _ = phase_alone(ctx, series, args.associations)
        print(f"[{engine}] A1 {a1:.0f} inst/s", flush=True)
        b = phase_with_catalog(manager, ctx, series, args.associations)
        print(f"[{engine}] B  intake {b['intake']:.0f} inst/s, all cataloged after "
              f"{b['total_s']:.1f} s", flush=True)
        a2, a2_cpu = phase_alone(ctx, series, args.associations)
        print(f"[{engine}] A2 {a2:.0f} inst/s", flush=True)
    finally:
        manager.down(name)
        if cluster is not None:
            cluster.stop()
    return {"a1": a1, "a2": a2, "a": statistics.mean([a1, a2]), "a2_cpu": a2_cpu, **b}


def report(engine: str, r: dict, n: int, count: int) -> None:
    lags = r["lags"]
    e2e = n / r["total_s"]
    p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))]
    print(f"[{engine}]  {n} instances in {count} series")
    print(f"  Orthanc alone        A1 {r['a1']:5.0f}  A2 {r['a2']:5.0f}  mean {r['a']:5.0f} inst/s")
    print(f"  Orthanc + catalog    intake {r['intake']:5.0f} inst/s (ratio {r['intake'] / r['a']:.2f}); "
          f"end to end {e2e:5.0f} inst/s (ratio {e2e / r['a']:.2f}; the last series cataloged "
          f"{r['total_s']:.1f} s after the first instance was sent, {r['send_s']:.1f} s to send)")
    print(f"  catalog lag after StableSeries: median {statistics.median(lags):.1f} s, "
          f"p95 {p95:.1f} s, max {lags[-1]:.1f} s over {len(lags)} series"
          + (f" ({r['unseen_stable']} series never reported stable)" if r["unseen_stable"] else ""))
    wall, cores = r["total_s"], os.cpu_count() or 1
    print(f"  CPU seconds in B ({wall:.1f} s: at most {cores * wall:.0f} on {cores} cores): " + ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in r["cpu"].items()))
    a2 = dict(r["a2_cpu"])
    print(f"  CPU seconds in A2 ({a2.pop('wall'):.1f} s): " + ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in a2.items()))
    lag_ok = lags[-1] <= LAG_TARGET and not r["unseen_stable"]
    rate_ok = e2e / r["a"] >= RATE_TARGET
    print(f"  target: every series cataloged within {LAG_TARGET:.0f} s -> max {lags[-1]:.1f} s "
          f"({'met' if lag_ok else 'MISSED'}); end to end at least {RATE_TARGET:.0%} of Orthanc's "
          f"rate -> {e2e / r['a']:.0%} ({'met' if rate_ok else 'MISSED'})")


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (as bench_ingest: a background job's sites must stop on SIGINT)
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--slices", type=int, default=250, help="instances per series")
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--stable-age", type=int, default=1)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["RADFLOW_HOME"] = str(home)
        began = time.perf_counter()
        series = make_stream(Path(tmp) / "data", args.instances, args.slices)
        n = sum(len(s) for s in series)
        print(f"{n} instances of 512x512 in {len(series)} series written in "
              f"{time.perf_counter() - began:.0f} s", flush=True)
        results = {engine: measure(home, series, args, engine) for engine in engines}
    for engine, r in results.items():
        report(engine, r, n, len(series))


if __name__ == "__main__":
    main()
