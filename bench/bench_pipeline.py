"""segment-and-quantify against its limits, measured in one run on one site:

    .venv/bin/python bench/bench_pipeline.py [--cases 8] [--clinical-slices 50 150 300]

1. Near the limit: the segment step per case (the producer task: read the series from Orthanc,
   build the volume, predict, encode the SEG, store it, record it) against the bare predictor on
   the same volume already in memory (the limit for this model here). Target: within 1.3x.
   The breakdown of the step is printed.
2. Using both cores: the whole pipeline (segment + quantify per case, the cohort fan-out)
   with 2 cases in flight against 1 at a time. Target: at least 1.3x the throughput.
3. Ahead of the CLI: the model kept loaded against `nnUNetv2_predict` started per case.
   Target: at least 15x.
4. At clinical size: 512x512 CT of 50, 150 and 300 slices. segment + quantify (the pipeline on
   one case, recomputed) against the sum of its two limits measured on the same case: the bare
   predictor on the volume in memory, and bare pyradiomics (the extractor with the same
   parameters, one call per segment) on the masks of the SEG it wrote. Target: within 1.3x at
   every size, and a peak memory of the process below 4 GiB at 300 slices. Each step's own
   breakdown (its timers, kept in the catalog with its result) is printed.
5. (in 2.) The same fan-out on Dask: a LocalCluster of 2 worker processes (each loads the
   model) against the thread runner (one process, the model shared).

Everything runs against a real site (Orthanc + Prefect) with the real model; results are
recomputed (force=True) where a step is timed, and every run writes the same deterministic
objects.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import SimpleITK as sitk


class PeakMemory:
    """The peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakMemory:
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, me.memory_info().rss)

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def bare_predictor(volumes: list, model_name: str) -> list[float]:
    """The limit: nnU-Net's predictor, model kept loaded, volume in memory; seconds per case."""
    from radflow_nnunet.models import get_model
    from radflow_nnunet.predictor import load_model, predict

    info = get_model(model_name)
    inference = info.card.get("inference", {})
    model = load_model(info.path, use_mirroring=inference.get("use_mirroring", False),
                       patch_size=inference.get("patch_size"),
                       tile_step_size=inference.get("tile_step_size", 0.5))
    times = []
    for image in volumes:
        began = time.perf_counter()
        predict(model, image)
        times.append(time.perf_counter() - began)
    return times


def segment_steps(ctx, refs: list, model_name: str) -> tuple[list[float], list[dict]]:
    """The segment producer task per case (recomputed): wall seconds and its own breakdown."""
    from prefect import flow

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult
    from radflow.site.registration import site_prefect
    from radflow_nnunet.tasks import segment_series

    @flow(name="bench-segment-steps")
    def steps() -> tuple[list[float], list]:
        walls, segs = [], []
        for ref in refs:
            began = time.perf_counter()
            segs.append(segment_series(ref, model=model_name, site=ctx.name, force=True))
            walls.append(time.perf_counter() - began)
        return walls, segs

    with site_prefect(ctx):
        walls, segs = steps()
    with session_scope(ctx.catalog_url) as session:
        parts = [json.loads(session.get(DerivedResult, s.result_id).detail)["timings"]
                 for s in segs]
    return walls, parts


def pipeline(ctx, uids: list[str], parallel: int, isolation: str = "inline") -> float:
    from radflow.flows.segment_quantify import segment_and_quantify
    from radflow.site.registration import site_prefect

    with site_prefect(ctx):
        began = time.perf_counter()
        result = segment_and_quantify(series_uids=uids, site=ctx.name, max_parallel=parallel,
                                      force=True, isolation=isolation)
        elapsed = time.perf_counter() - began
    assert result["failed"] == 0, result["rows"]
    return elapsed


def bare_radiomics(ctx, orthanc, volume, seg_instance: str) -> float:
    """The limit of the quantify step: pyradiomics' extractor on the masks of a SEG (already
    decoded), one call per segment, with the step's parameters; seconds."""
    from io import BytesIO

    import pydicom
    from radiomics import featureextractor

    from radflow.site.registration import site_prefect
    from radflow_radiomics.tasks import resolve_params, segment_masks

    seg = pydicom.dcmread(BytesIO(orthanc.instance_file(seg_instance)))
    masks = segment_masks(seg, volume)
    with site_prefect(ctx):  # (the parameters are a block on the site's Prefect)
        params = resolve_params("default").to_pyradiomics()
    extractor = featureextractor.RadiomicsFeatureExtractor(params)
    began = time.perf_counter()
    for _label, mask in masks.values():
        extractor.execute(volume.image, mask, label=1)
    return time.perf_counter() - began


def step_timings(ctx, series_uid: str) -> dict[str, dict]:
    """The newest SEG and SR results of a series: their steps' own timers (the catalog's)."""
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult

    out = {}
    with session_scope(ctx.catalog_url) as session:
        for kind in ("SEG", "SR"):
            row = session.exec(select(DerivedResult).where(
                DerivedResult.source_series_uid == series_uid, DerivedResult.kind == kind)
                .order_by(DerivedResult.id.desc())).first()  # (the newest generation)
            out[kind] = {"timings": json.loads(row.detail).get("timings", {}),
                         "orthanc_id": row.orthanc_id}
    return out


def clinical_case(ctx, orthanc, case, model_name: str) -> dict:
    """One clinical-size case: segment + quantify against the bare predictor plus bare
    pyradiomics on the same volume and masks, with the steps' breakdowns and the peak memory."""
    from radflow.imaging import load_volume

    ref = orthanc.series_by_uid(case.series_uid)
    with PeakMemory() as memory:
        began = time.perf_counter()
        pipeline(ctx, [case.series_uid], 1)
        total = time.perf_counter() - began
    steps = step_timings(ctx, case.series_uid)
    volume = load_volume(orthanc, ref)
    predict = bare_predictor([volume.image], model_name)[0]
    radiomics = bare_radiomics(ctx, orthanc, volume, steps["SEG"]["orthanc_id"])
    return {"slices": ref.instance_count, "seconds": total, "peak": memory.peak,
            "predict": predict, "radiomics": radiomics,
            "segment": steps["SEG"]["timings"], "quantify": steps["SR"]["timings"]}


def cli_per_case(volumes: list, model_name: str, work: Path) -> list[float]:
    """`nnUNetv2_predict` once per case, from nnU-Net's own results layout."""
    import torch

    from radflow_nnunet.models import get_model

    info = get_model(model_name)
    results = work / "results"
    trained = results / info.card["dataset"] / f"nnUNetTrainer__{info.card['plans']}__3d_fullres"
    shutil.copytree(info.path, trained)
    checkpoint = trained / "fold_all" / "checkpoint_final.pth"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved["trainer_name"] = "nnUNetTrainer"  # the name nnU-Net's lookup finds without imports
    torch.save(saved, checkpoint)
    env = {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(work),
           "nnUNet_preprocessed": str(work)}
    predict = Path(sys.executable).parent / "nnUNetv2_predict"
    times = []
    for k, image in enumerate(volumes):
        case_in, case_out = work / f"in{k}", work / f"out{k}"
        case_in.mkdir()
        sitk.WriteImage(image, str(case_in / f"case_{k:03d}_0000.nii.gz"))
        argv = [str(predict), "-i", str(case_in), "-o", str(case_out), "-d", info.card["dataset"],
                "-c", "3d_fullres", "-p", info.card["plans"], "-tr", "nnUNetTrainer", "-f", "all",
                "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"]
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    from radflow.service import restore_sigint

    restore_sigint()  # (a bench run as a background job has SIGINT ignored, and so would its
    # sites' Prefect workers: each would stop only on SIGTERM, 20 s later)
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=8,
                        help="cases at 128x128 (throughput wants enough to amortize the tail; "
                             "0: the clinical sizes only)")
    parser.add_argument("--clinical-slices", type=int, nargs="*", default=[50, 150, 300],
                        help="one 512x512 case of each of these slice counts (none: skip)")
    parser.add_argument("--model", default="radflow-abdomen-demo")
    parser.add_argument("--dask", action=argparse.BooleanOptionalAction, default=True,
                        help="also the fan-out on Dask (a LocalCluster of 2 processes)")
    args = parser.parse_args()
    from radflow.catalog.sync import wait_in_step
    from radflow.data.push import push
    from radflow.imaging import load_volume
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager
    from radflow.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RADFLOW_HOME"] = str(tmp / "home")
        cases = synthesize(tmp / "data", args.cases, seed=4000, matrix=128) if args.cases else []
        big = [synthesize(tmp / f"big{n}", 1, seed=4100, matrix=512, slices=n, start=k)[0]
               for k, n in enumerate(args.clinical_slices)]  # (one series each: other UIDs)
        manager = SiteManager(RadflowSettings(home=tmp / "home"))
        manager.up("bench", stable_age=1)
        ctx = manager.context("bench")
        try:
            orthanc = ctx.orthanc_client()
            push([*([tmp / "data"] if cases else []), *(tmp / f"big{n}" for n in args.clinical_slices)],
                 client=orthanc,
                 host="127.0.0.1", port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
            wait_in_step(orthanc, ctx.catalog_url, timeout=600)
            refs = [orthanc.series_by_uid(c.series_uid) for c in cases]
            uids = [c.series_uid for c in cases]
            pipeline(ctx, [(uids or [b.series_uid for b in big])[0]], 1)  # warm-up: model
            if cases:  # load, imports, caches
                volumes = [load_volume(orthanc, ref).image for ref in refs]
                t_bare = bare_predictor(volumes, args.model)
                t_step, parts = segment_steps(ctx, refs, args.model)
                t_one = pipeline(ctx, uids, 1)
                t_two = pipeline(ctx, uids, 2)
                t_dask = pipeline(ctx, uids, 2, isolation="dask") if args.dask else None
                t_cli = cli_per_case(volumes, args.model, tmp / "cli")
            clinical = [clinical_case(ctx, orthanc, case, args.model) for case in big]
        finally:
            manager.down("bench")
    if cases:
        print_small(args, cases, t_bare, t_step, parts, t_one, t_two, t_dask, t_cli)
    print_clinical(clinical)


def print_small(args, cases, t_bare, t_step, parts, t_one, t_two, t_dask, t_cli) -> None:
    n = args.cases
    bare, step, cli = statistics.mean(t_bare), statistics.mean(t_step), statistics.mean(t_cli)
    breakdown = {k: statistics.mean(p.get(k, 0.0) for p in parts)
                 for k in ("read", "volume", "load_model", "predict", "encode", "store", "catalog")}
    other = step - sum(breakdown.values())
    print(f"{n} CT cases (128x128, {sum(c.slices for c in cases)} slices), model {args.model}, "
          f"{os.cpu_count()} cores")
    print(f"1. segment step {step:5.2f} s/case   bare predictor {bare:5.2f} s/case   ratio "
          f"{step / bare:.2f}x (target within 1.3x: {'met' if step / bare <= 1.3 else 'MISSED'})")
    print("   breakdown per case: " + ", ".join(f"{k} {v:.3f} s" for k, v in breakdown.items())
          + f", Prefect task and the rest {other:.3f} s")
    print(f"2. pipeline, 2 cases in flight {t_two:5.1f} s   1 at a time {t_one:5.1f} s   "
          f"throughput {t_one / t_two:.2f}x (target at least 1.3x: "
          f"{'met' if t_one / t_two >= 1.3 else 'MISSED'})")
    if t_dask is not None:
        print(f"   on Dask (LocalCluster, 2 worker processes, cluster start included) {t_dask:5.1f} s"
              f"   thread runner {t_two:5.1f} s   Dask / threads {t_dask / t_two:.2f}x time")
    print(f"3. model kept loaded {bare:5.2f} s/case   nnUNetv2_predict {cli:5.2f} s/case   "
          f"{cli / bare:.1f}x (target at least 15x: {'met' if cli / bare >= 15 else 'MISSED'})")
    print(json.dumps({"cases": n, "segment_step_s": round(step, 3), "bare_predict_s": round(bare, 3),
                      "breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
                      "pipeline_1_s": round(t_one, 2), "pipeline_2_s": round(t_two, 2),
                      "pipeline_2_dask_s": round(t_dask, 2) if t_dask is not None else None,
                      "cli_per_case_s": round(cli, 2)}))


def print_clinical(clinical: list[dict]) -> None:
    for c in clinical:
        limit = c["predict"] + c["radiomics"]
        ratio = c["seconds"] / limit
        memory = "" if c["slices"] < 300 else (
            f"; below 4 GiB: {'met' if c['peak'] < 4 * 2**30 else 'MISSED'}")
        print(f"4. clinical size, 512x512 x {c['slices']} slices: segment + quantify "
              f"{c['seconds']:.1f} s, limits {limit:.1f} s (bare predictor {c['predict']:.1f} s + "
              f"bare pyradiomics {c['radiomics']:.1f} s), ratio {ratio:.2f}x (target within "
              f"1.3x: {'met' if ratio <= 1.3 else 'MISSED'}); peak memory "
              f"{c['peak'] / 2**30:.2f} GiB{memory}")
        for step in ("segment", "quantify"):
            print(f"   {step}: " + ", ".join(f"{k} {v:.2f} s" for k, v in c[step].items()))
    print(json.dumps({"clinical": [{"slices": c["slices"], "seconds": round(c["seconds"], 1),
                                    "bare_predict_s": round(c["predict"], 2),
                                    "bare_radiomics_s": round(c["radiomics"], 2),
                                    "peak_gib": round(c["peak"] / 2**30, 2)}
                                   for c in clinical]}))


if __name__ == "__main__":
    main()
