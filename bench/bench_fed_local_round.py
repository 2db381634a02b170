"""Time one federated local round at the demo model's real budget.

    .venv/bin/python bench/bench_fed_local_round.py [--work DIR] [--cases 20] [--iterations 30]

The demo recipe's data (radflow_nnunet.training: synthetic phantoms, nnU-Net's planner, the
small plan, preprocessing), then round-0 weights and one local round of 1 epoch from them
(radflow_nnunet.federated.local.train_local), held-out case excluded; prints the seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-fed-local"))
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    from radflow_nnunet import training

    work = args.work.resolve()
    training.set_nnunet_env(work)
    folder = work / "preprocessed" / training.DATASET
    began = time.perf_counter()
    if not (folder / f"{training.PLANS}.json").exists():
        training.make_dataset(work, args.cases)
        training.plan_and_preprocess(work)
    prepared = time.perf_counter() - began
    from radflow_nnunet.federated.local import initial_weights, train_local
    from radflow_nnunet.federated.weights import to_vector

    plans = json.loads((folder / f"{training.PLANS}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cases = sorted(p.stem for p in (folder / plans["configurations"]["3d_fullres"]
                                    ["data_identifier"]).glob("*.pkl"))
    w0 = to_vector(initial_weights(plans, dataset_json, seed=0))
    result = train_local(folder, plans, dataset_json, w0, cases=cases, epochs=args.epochs,
                         iterations=args.iterations, round_index=0, total_rounds=10, seed=0,
                         work=work / "round")
    print(json.dumps({"data_and_plan_s": round(prepared, 1), "cases": len(cases),
                      "epochs": args.epochs, "iterations": args.iterations,
                      "round_s": result.seconds, "loss": result.mean_train_loss,
                      "weights": int(result.vector_fp16.size),
                      "release_mb_fp16": round(result.vector_fp16.nbytes / 2**20, 2),
                      "patch": plans["configurations"]["3d_fullres"]["patch_size"],
                      "median_shape": plans["configurations"]["3d_fullres"]
                      ["median_image_size_in_voxels"]}, indent=1))


if __name__ == "__main__":
    main()
