"""Federated nnU-Net against its baselines, on three synthetic hospitals that differ.

    .venv/bin/python bench/bench_federated_training.py --work NEW_DIR [--cases 4]
        [--test-cases 3] [--matrix 64] [--rounds 8] [--epochs 1] [--iterations 30] [--no-secure]
        [--no-site-only]

Three sites with the profiles a, b and c of radflow.synth (vendor, contrast phase, noise, slice
thickness, anatomy: a model trained at one loses accuracy at the others, bench/fed_sites.py), each
with ``--cases`` training cases and ``--test-cases`` held-out ones. Trained with the same network
(training.py's small plan, patch 32x64x64) and the same total number of training iterations as
the federated model (rounds x epochs x iterations at each of the three sites):

- pooled: one model on all sites' training cases, with the federated total (3 sites' iterations);
- site-only: one model per site on its own cases, with its own share of that total (the
  iterations the site trains in the federated study);
- federated: the federated-nnunet-training flow (radflow_nnunet.federated.simulate: the real
  site parts, gates and coordinator, in one process; FedAvg weighted by cases);
- federated with secure aggregation (the same, the updates masked in fixed point).

Every model is scored (mean Dice over liver, spleen, kidney) on every site's held-out cases.
Printed: the table, and the targets: federated within 0.02 of pooled; on the other sites' cases
federated beats each site-only model by >= 0.03; secure aggregation moves the Dice by < 0.005;
a round's time (the slowest site's part plus the hub's work; sites run side by side in a real
federation, one after the other here) against the slowest site's local training (<= 1.15x);
bytes per site and round against the fp32 full checkpoint. Each model trains in its own process
(nnU-Net reads its folders from the environment once per process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fed_sites import TEST_SEED, TRAIN_SEED, dice_on, train_on

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "federation" / "flows" / "federated-nnunet-training"
PROFILES = ("a", "b", "c")


def _mean(dice: dict[str, float]) -> float:
    return float(np.mean(list(dice.values())))


def _scores(model: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    return {p: _mean(dice_on(model, work, p, cases=args.test_cases, matrix=args.matrix))
            for p in PROFILES}


def baseline(work: Path, profiles: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """A model trained in the classic way on ``profiles``' training cases, scored everywhere:
    ``len(profiles)`` sites' share of the federated iterations (pooled: all three)."""
    began = time.perf_counter()
    model = train_on(work, profiles, cases=args.cases, matrix=args.matrix,
                     epochs=args.rounds * args.epochs,
                     iterations=args.iterations * len(profiles))
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "dice": _scores(model, work, args)}


def federated(work: Path, args: argparse.Namespace, secure: bool) -> dict[str, Any]:
    """The flow over the three sites, its model scored everywhere; per round: each site's time
    for its part, its local training time, the hub's time and the bytes each site released."""
    from radflow.hub.studies import round_summary
    from radflow.synth import synthesize
    from radflow_nnunet.federated.simulate import SimSite, simulate
    from radflow_nnunet.federated.study_site import DATASET, LABELS
    from radflow_nnunet.training import write_raw_case

    sites = {}
    for k, profile in enumerate(PROFILES):  # the pooled model's cases of this profile
        raw = work / profile / "raw" / DATASET
        train = synthesize(work / profile / "train", args.cases, seed=TRAIN_SEED,
                           matrix=args.matrix, start=k * args.cases, site_profile=profile)
        test = synthesize(work / profile / "test", args.test_cases, seed=TEST_SEED,
                          matrix=args.matrix, start=100, site_profile=profile)
        for case in train:
            write_raw_case(case, raw, "Tr")
        for case in test:
            write_raw_case(case, raw, "Ts")
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": len(train),
            "file_ending": ".nii.gz", "name": DATASET}))
        sites[profile] = SimSite.make(work / profile, raw, [c.name for c in train],
                                      [c.name for c in test])
    params = {"cohort": {"version": 1, "where": {}}, "rounds": args.rounds,
              "epochs": args.epochs, "iterations": args.iterations, "quorum": 3, "seed": 7,
              "model_name": "bench-federated", "secure_aggregation": secure}
    began = time.perf_counter()
    run = simulate(FLOW, sites, params, work / "hub")
    seconds = time.perf_counter() - began
    per_round = []
    for done in run["rounds"]:
        if done["round"] not in ("train", "train_secure"):
            continue
        local = {e["site"]: e["local"].get("seconds") for e in done["sites"]
                 if e["status"] == "released"}
        sizes = {site: e["bytes"] for site, e in round_summary(done)["sites"].items()
                 if e["status"] == "released"}
        per_round.append({"site_seconds": done["site_seconds"], "local_seconds": local,
                          "hub_seconds": done["hub_seconds"], "bytes": sizes})
    return {"seconds": seconds, "dice": _scores(work / "hub" / "model", work, args),
            "rounds": per_round, "parameters": run["combined"]["parameters"],
            "validation": run["combined"]["validation"]}


def _in_process(fn: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench_federated_training.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="training cases per site")
    parser.add_argument("--test-cases", type=int, default=3, help="held-out cases per site")
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--iterations", type=int, default=30, help="batches per epoch")
    parser.add_argument("--no-secure", action="store_true", help="skip the secure run")
    parser.add_argument("--no-site-only", action="store_true",
                        help="skip the site-only models (federated against pooled only)")
    parser.add_argument("--work", type=Path, required=True, help="a new scratch folder")
    args = parser.parse_args(argv)
    if args.work.exists() and any(args.work.iterdir()):
        parser.error(f"the work folder {args.work} is not empty; give a new --work")
    began = time.perf_counter()
    steps = args.rounds * args.epochs * args.iterations
    print(f"3 sites (profiles a, b, c), {args.cases} training and {args.test_cases} held-out "
          f"cases each of {args.matrix}x{args.matrix}; {steps * len(PROFILES)} training "
          f"iterations (federated: {args.rounds} rounds x {args.epochs} epochs x "
          f"{args.iterations} at each site; pooled: {args.rounds * args.epochs} epochs x "
          f"{args.iterations * len(PROFILES)}; each site-only model its share, "
          f"{args.rounds * args.epochs} epochs x {args.iterations})", flush=True)
    models: dict[str, Any] = {}
    models["federated"] = _in_process(federated, args.work / "federated", args, False)
    print(f"federated: seconds {models['federated']['seconds']:.0f}, "
          f"dice {models['federated']['dice']}", flush=True)
    models["pooled"] = _in_process(baseline, args.work / "pooled", list(PROFILES), args)
    print(f"pooled: {models['pooled']}", flush=True)
    for p in PROFILES if not args.no_site_only else ():
        models[f"site-only {p}"] = _in_process(baseline, args.work / f"only-{p}", [p], args)
        print(f"site-only {p}: {models[f'site-only {p}']}", flush=True)
    if not args.no_secure:
        models["secure"] = _in_process(federated, args.work / "secure", args, True)

    print(f"\n{'model':<14}" + "".join(f"{'site ' + p:>9}" for p in PROFILES)
          + f"{'mean':>9}{'minutes':>9}")
    for name in ["pooled", *(f"site-only {p}" for p in PROFILES), "federated", "secure"]:
        if name not in models:
            continue
        m = models[name]
        print(f"{name:<14}" + "".join(f"{m['dice'][p]:9.4f}" for p in PROFILES)
              + f"{_mean(m['dice']):9.4f}{m['seconds'] / 60:9.1f}")
    fed, pooled = models["federated"], models["pooled"]
    print(f"\nfederated - pooled mean Dice: {_mean(fed['dice']) - _mean(pooled['dice']):+.4f} "
          "(target >= -0.02)")
    for p in PROFILES if not args.no_site_only else ():
        others = [q for q in PROFILES if q != p]
        gain = np.mean([fed["dice"][q] for q in others]) - \
            np.mean([models[f"site-only {p}"]["dice"][q] for q in others])
        print(f"federated - site-only {p} on the other sites' cases: {gain:+.4f} "
              "(target >= +0.03)")
    if "secure" in models:
        print(f"secure - plain federated mean Dice: "
              f"{_mean(models['secure']['dice']) - _mean(fed['dice']):+.4f} (target |x| < 0.005)")
    from radflow.federation.weights import checkpoint_bytes

    full = checkpoint_bytes(fed["parameters"])
    for name in [n for n in ("federated", "secure") if n in models]:
        ratios, sizes = [], []
        for r in models[name]["rounds"]:
            slowest = max(v for v in r["local_seconds"].values() if v is not None)
            ratios.append((max(r["site_seconds"].values()) + r["hub_seconds"]) / slowest)
            sizes.extend(r["bytes"].values())
        print(f"{name}: round time / slowest site's local training: median "
              f"{np.median(ratios):.3f}x, max {max(ratios):.3f}x (target <= 1.15x); bytes per "
              f"site and round {int(np.median(sizes)):,} against the fp32 checkpoint "
              f"{full:,} ({np.median(sizes) / full:.2f}x)")
    print(f"\ntotal {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
