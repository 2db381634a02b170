"""Do the synthetic site profiles differ enough? Train at one site, score at every site.

    .venv/bin/python bench/fed_sites.py [--train-profile a [b c]] [--cases 12] [--matrix 64]
        [--epochs 10] [--iterations 30] [--test-cases 5] --work NEW_DIR

Trains the demo model's recipe (radflow_nnunet.training: nnU-Net fingerprint and planner, the
small plan, DefaultPreprocessor, RadflowTrainer) on ``--cases`` synthetic cases of one site
profile only (or, with several profiles, on the same number of cases pooled from them: the
pooled baseline), then predicts held-out cases (another seed) of every profile with the model's
inference settings and prints the mean Dice per organ and profile, and each profile's drop
against the training profile. The target for the federated bench: a clear drop (>= 0.05 mean
Dice) on the other profiles.

Measured (2 shared CPU cores, defaults: 12 cases of 64x64, 10 epochs x 30 iterations, 5
held-out cases per profile, seeds 1000 / 2000), mean Dice liver/spleen/kidney:

    --train-profile a       a 0.975/0.959/0.937 (0.957)  b 0.358/0.579/0.850 (0.596)
                            c 0.709/0.071/0.665 (0.482)  drops 0.361 (b) and 0.475 (c); 9.7 min
    --train-profile a b c   a 0.952/0.932/0.864 (0.916)  b 0.960/0.927/0.855 (0.914)
      (4 cases each)        c 0.960/0.915/0.885 (0.920)                           12.4 min

so the profiles are learnable together: the drop is the sites' difference (phase, thickness,
noise, anatomy), not a broken site.

The functions (``write_raw_dataset``, ``train_on``, ``dice_on``) are for the federated bench to
reuse: they take the profile, seed and size of the cases, and a work folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from radflow.synth import SITE_PROFILES, SynthCase, synthesize

TRAIN_SEED, TEST_SEED = 1000, 2000


def write_raw_dataset(raw: Path, cases: list[SynthCase]) -> None:
    """Synthetic cases -> an nnU-Net raw dataset folder (images read from their DICOM files,
    as inference reads them)."""
    from radflow_nnunet.training import LABELS, MODEL_NAME, write_raw_case

    for case in cases:
        write_raw_case(case, raw)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": len(cases),
        "file_ending": ".nii.gz", "name": MODEL_NAME}, indent=2))


def train_on(work: Path, profiles: list[str | None], *, cases: int, matrix: int, epochs: int,
             iterations: int, seed: int = TRAIN_SEED) -> Path:
    """Train the demo recipe on ``cases`` cases of each profile in ``profiles`` (pooled);
    returns the exported model folder (``work/model``). ``work`` must be fresh: nnU-Net reads
    its folders from the environment, set here, once per process."""
    from radflow_nnunet.training import (
        DATASET,
        export,
        plan_and_preprocess,
        set_nnunet_env,
        train,
    )

    set_nnunet_env(work)
    pooled = []
    for k, profile in enumerate(profiles):
        made = synthesize(work / "synth-train" / str(profile), cases, seed=seed, matrix=matrix,
                          start=k * cases, site_profile=profile)
        pooled.extend(made)
    write_raw_dataset(work / "raw" / DATASET, pooled)
    plan_and_preprocess(work)
    fold = train(work, epochs, iterations)
    export(fold, work, work / "model")
    return work / "model"


def dice_on(model_dir: Path, work: Path, profile: str | None, *, cases: int, matrix: int,
            seed: int = TEST_SEED) -> dict[str, float]:
    """Mean Dice per organ of the model on ``cases`` held-out cases of ``profile``."""
    import SimpleITK as sitk

    from radflow_nnunet.predictor import load_model, predict
    from radflow_nnunet.training import INFERENCE, read_series

    model = load_model(model_dir, use_mirroring=INFERENCE["use_mirroring"],
                       patch_size=INFERENCE["patch_size"],
                       tile_step_size=INFERENCE["tile_step_size"])
    scores: dict[str, list[float]] = {name: [] for name in model.labels.values()}
    for case in synthesize(work / "synth-test" / str(profile), cases, seed=seed, matrix=matrix,
                           site_profile=profile):
        image = read_series(case.dicom_dir)
        predicted = sitk.GetArrayFromImage(predict(model, image))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
        for value, name in model.labels.items():
            a, b = predicted == value, truth == value
            total = int(a.sum() + b.sum())
            scores[name].append(2.0 * float((a & b).sum()) / total if total else 1.0)
    return {name: round(float(np.mean(v)), 4) for name, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fed_sites.py", description=__doc__.split("\n")[0])
    parser.add_argument("--train-profile", nargs="+", default=["a"], choices=sorted(SITE_PROFILES),
                        help="one profile, or several to pool --cases evenly from them")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=5)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--work", type=Path, required=True, help="a new scratch folder")
    args = parser.parse_args(argv)
    per_profile = args.cases // len(args.train_profile)
    if per_profile < 1:
        parser.error(f"--cases {args.cases} cannot be shared by {len(args.train_profile)} profiles")
    if args.work.exists() and any(args.work.iterdir()):
        parser.error(f"the work folder {args.work} is not empty (nnU-Net would reuse what it "
                     "holds); give a new --work or remove it")
    began = time.perf_counter()
    model = train_on(args.work, args.train_profile, cases=per_profile, matrix=args.matrix,
                     epochs=args.epochs, iterations=args.iterations)
    trained = time.perf_counter() - began
    results = {p: dice_on(model, args.work, p, cases=args.test_cases, matrix=args.matrix)
               for p in sorted(SITE_PROFILES)}
    home = float(np.mean(list(results[args.train_profile[0]].values())))
    print(f"trained on profile(s) {'+'.join(args.train_profile)}: {per_profile} cases each of "
          f"{args.matrix}x{args.matrix}, {args.epochs} epochs x {args.iterations} iterations, "
          f"{trained / 60:.1f} min; held-out: {args.test_cases} cases per profile")
    for profile, dice in results.items():
        mean = float(np.mean(list(dice.values())))
        print(f"profile {profile}: Dice {dice}  mean {mean:.4f}  drop against {args.train_profile[0]} "
              f"{home - mean:+.4f}")
    print(f"total {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
