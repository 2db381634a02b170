"""The federated-nnunet-training flow driven as the hub drives it, in this process
(radflow_nnunet.federated.simulate: the coordinator between rounds, the relay of the sites'
enrolled keys, every release through the site's gate and the hub's schema check), over tiny
synthetic sites."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radflow_nnunet.federated.simulate import STUDY, SimSite, load_coordinator, simulate

FLOW = Path(__file__).resolve().parents[1] / "federation" / "flows" / "federated-nnunet-training"
SITES = {"essen": (11, 3), "leiden": (22, 3), "zurich": (33, 4)}  # seed, cases (one held out)
PARAMS = {"cohort": {"version": 1, "where": {}}, "rounds": 2, "epochs": 1, "iterations": 2,
          "quorum": 2, "seed": 3, "patch": [16, 32, 32], "model_name": "fed-test",
          "samples_per_case": 2000}
__all__ = ["FLOW", "PARAMS", "SITES", "STUDY", "coordinator", "drive", "make_site"]


def make_site(work: Path, name: str, seed: int, cases: int) -> SimSite:
    """A site: its raw dataset as the fingerprint round writes it (train and held-out cases)
    and its folder with the Ed25519 key it enrolled with."""
    from radflow.synth import synthesize
    from radflow_nnunet.federated.study_site import DATASET, LABELS
    from radflow_nnunet.training import write_raw_case

    raw = work / name / "raw" / DATASET
    names = []
    for k, case in enumerate(synthesize(work / name / "synth", cases, seed=seed, matrix=40)):
        write_raw_case(case, raw, "Ts" if k == cases - 1 else "Tr")
        names.append(case.name)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": cases - 1,
        "file_ending": ".nii.gz", "name": DATASET}))
    return SimSite.make(work / name, raw, names[:-1], names[-1:])


def coordinator() -> Any:
    return load_coordinator(FLOW)


def drive(work: Path, params: dict[str, Any],
          missing: Callable[[dict[str, Any], str], bool] = lambda _r, _s: False
          ) -> dict[str, Any]:
    """The whole study, round by round; ``missing(round_params, site)``: that site does not
    answer that round (it is reported missing, as at the hub's deadline). Every site the
    study asks releases (the tests' policy allows all)."""
    sites = {name: make_site(work, name, seed, cases) for name, (seed, cases) in SITES.items()}
    run = simulate(FLOW, sites, params, work / "hub", missing=missing)
    for done in run["rounds"]:
        for entry in done["sites"]:
            assert entry["status"] in ("released", "missing"), (done["round"], entry)
    return run | {"work": work, "sites": sites}
