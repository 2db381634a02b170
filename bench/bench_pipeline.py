"""segment-and-quantify benchmark, three comparisons measured in one run on one site:

    .venv/bin/python bench/bench_pipeline.py [--cases 5]

1. the flow (Prefect orchestration, in-process, 1 case at a time) vs the same functions called
   directly (target: overhead under 10%);
2. a batch of cases with the model kept loaded (radflow's predictor) vs `nnUNetv2_predict`
   started once per case (the usual way to run nnU-Net);
3. the flow with 2 cases in parallel vs 1 at a time (2 CPU cores).

The site, the cases and the model are the same in every variant; the flow runs are forced to
recompute (force=True), and every variant writes the same deterministic SEG and SR objects.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk


def direct(ctx, refs, model_name: str) -> float:
    """The pipeline's functions called one after the other, no Prefect."""
    import io

    import pydicom

    from radflow.imaging import load_volume
    from radflow_nnunet.block import NnUNetModel
    from radflow_nnunet.models import get_model
    from radflow_nnunet.tasks import segment
    from radflow_radiomics.block import RadiomicsParams
    from radflow_radiomics.tasks import quantify

    model = NnUNetModel(**get_model(model_name).block_fields())
    orthanc = ctx.orthanc_client()
    began = time.perf_counter()
    for ref in refs:
        seg, _ = segment(ref, model, orthanc)
        stored = orthanc.store_dataset(seg)
        volume = load_volume(orthanc, ref)
        seg_ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(stored.instance_id)))
        _, sr = quantify(volume, seg_ds, RadiomicsParams())
        orthanc.store_dataset(sr)
    return time.perf_counter() - began


def flow_run(ctx, uids: list[str], parallel: int) -> float:
    from radflow.flows.segment_quantify import segment_and_quantify
    from radflow.site.registration import site_prefect

    with site_prefect(ctx):
        began = time.perf_counter()
        result = segment_and_quantify(series_uids=uids, site=ctx.config.name,
                                      max_parallel=parallel, force=True)
        elapsed = time.perf_counter() - began
    assert result["failed"] == 0, result["rows"]
    return elapsed


def kept_loaded(volumes: list, model_name: str) -> float:
    from radflow_nnunet.models import get_model
    from radflow_nnunet.predictor import _CACHE, load_model, predict

    info = get_model(model_name)
    inference = info.card.get("inference", {})
    _CACHE.clear()
    began = time.perf_counter()
    model = load_model(info.path, use_mirroring=inference.get("use_mirroring", False),
                       patch_size=inference.get("patch_size"),
                       tile_step_size=inference.get("tile_step_size", 0.5))
    for image in volumes:
        predict(model, image)
    return time.perf_counter() - began


def cli_per_case(volumes: list, model_name: str, work: Path) -> float:
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
    elapsed = 0.0
    for k, image in enumerate(volumes):
        case_in, case_out = work / f"in{k}", work / f"out{k}"
        case_in.mkdir()
        sitk.WriteImage(image, str(case_in / f"case_{k:03d}_0000.nii.gz"))
        argv = [str(predict), "-i", str(case_in), "-o", str(case_out), "-d", info.card["dataset"],
                "-c", "3d_fullres", "-p", info.card["plans"], "-tr", "nnUNetTrainer", "-f", "all",
                "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"]
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        elapsed += time.perf_counter() - began
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--model", default="radflow-abdomen-demo")
    args = parser.parse_args()
    from radflow.catalog.sync import wait_in_step
    from radflow.data.push import push
    from radflow.imaging import load_volume
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager
    from radflow.synth import synthesize
    from radflow.types import SeriesRef

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RADFLOW_HOME"] = str(tmp / "home")
        cases = synthesize(tmp / "data", args.cases, seed=4000, matrix=128)
        manager = SiteManager(RadflowSettings(home=tmp / "home"))
        manager.up("bench", stable_age=1)
        ctx = manager.context("bench")
        try:
            push([tmp / "data"], client=ctx.orthanc_client(), host="127.0.0.1",
                 port=ctx.config.ports.orthanc_dicom, called_aet=ctx.config.aet)
            wait_in_step(ctx.orthanc_client(), ctx.catalog_url)
            orthanc = ctx.orthanc_client()
            refs = [SeriesRef(orthanc.series_by_uid(c.series_uid).orthanc_id, c.series_uid)
                    for c in cases]
            uids = [c.series_uid for c in cases]
            flow_run(ctx, uids[:1], 1)  # warm-up: model load, imports, caches
            t_direct = direct(ctx, refs, args.model)
            t_flow = flow_run(ctx, uids, 1)
            t_flow2 = flow_run(ctx, uids, 2)
            volumes = [load_volume(orthanc, ref).image for ref in refs]
            t_loaded = kept_loaded(volumes, args.model)
            t_cli = cli_per_case(volumes, args.model, tmp / "cli")
        finally:
            manager.down("bench")
    n = args.cases
    overhead = (t_flow - t_direct) / t_direct
    print(f"{n} CT cases (128x128, {sum(c.slices for c in cases)} slices), model {args.model}")
    print(f"1. flow (1 at a time) {t_flow:6.1f} s   direct calls {t_direct:6.1f} s   "
          f"overhead {overhead:+.1%} (target under 10%: {'met' if overhead < 0.10 else 'MISSED'})")
    print(f"2. model kept loaded  {t_loaded:6.1f} s   nnUNetv2_predict per case {t_cli:6.1f} s   "
          f"speed-up {t_cli / t_loaded:.1f}x  ({t_loaded / n:.2f} vs {t_cli / n:.2f} s per case)")
    print(f"3. flow, 2 in parallel {t_flow2:6.1f} s   1 at a time {t_flow:6.1f} s   "
          f"speed-up {t_flow / t_flow2:.2f}x on {os.cpu_count()} cores")
    print(json.dumps({"cases": n, "direct_s": round(t_direct, 2), "flow_s": round(t_flow, 2),
                      "flow_parallel2_s": round(t_flow2, 2), "kept_loaded_s": round(t_loaded, 2),
                      "cli_per_case_s": round(t_cli, 2)}))


if __name__ == "__main__":
    main()
