"""The federated-nnunet-training flow driven as the hub drives it (radflow.hub.studies.run_study:
the coordinator between rounds; only the sites that released are asked next; the hub relays the
sites' enrolled keys where a round asks for them), with the real site parts in this process over
tiny synthetic sites, every release through the site's gate and the hub's schema check."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radflow.federation.bundle import build
from radflow.federation.egress import gate
from radflow.federation.policy import SitePolicy
from radflow.federation.structure import check_release

FLOW = Path(__file__).resolve().parents[1] / "federation" / "flows" / "federated-nnunet-training"
POLICY = SitePolicy(min_cohort=1, min_cell=1, allow_weights=True)
SITES = {"essen": (11, 3), "leiden": (22, 3), "zurich": (33, 4)}  # seed, cases (one held out)
PARAMS = {"cohort": {"version": 1, "where": {}}, "rounds": 2, "epochs": 1, "iterations": 2,
          "quorum": 2, "seed": 3, "patch": [16, 32, 32], "model_name": "fed-test",
          "samples_per_case": 2000}
STUDY = "st-test"


def make_site(work: Path, name: str, seed: int, cases: int) -> dict[str, Any]:
    """A site: its raw dataset as the fingerprint round writes it (train and held-out cases)
    and its folder with the Ed25519 key it enrolled with."""
    from radflow.federation.signing import generate
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
    folder = work / name / "site"
    (folder / "federation").mkdir(parents=True)
    key = generate(folder / "federation" / "site.key")
    return {"raw": raw, "train": names[:-1], "held_out": names[-1:], "folder": folder,
            "state": work / name / "state", "key": key}


def coordinator() -> Any:
    spec = importlib.util.spec_from_file_location("fed_training_coordinator",
                                                  FLOW / "coordinator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def site_part(name: str, site: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    from radflow_nnunet.federated import study_secure, study_site

    state, round_name = site["state"], job["round"]
    if round_name == "fingerprint":
        return study_site.fingerprint_round(state, site["raw"], site["train"],
                                            site["held_out"], job)
    if round_name == "train":
        return study_site.train_round(state, job)
    if round_name == "keys":
        return study_secure.keys_round(state, name, STUDY, site["folder"], job)
    if round_name == "train_secure":
        return study_secure.secure_train_round(state, name, STUDY, site["folder"], job)
    return study_site.validate_round(state, job)


def drive(work: Path, params: dict[str, Any],
          missing: Callable[[dict[str, Any], str], bool] = lambda _r, _s: False
          ) -> dict[str, Any]:
    """The whole study, round by round; ``missing(round_params, site)``: that site does not
    answer that round (it is reported missing, as at the hub's deadline)."""
    from radflow.federation.signing import public_pem

    manifest, _ = build(FLOW, "test@hub")
    schema = manifest.release_schema
    sites = {name: make_site(work, name, seed, cases) for name, (seed, cases) in SITES.items()}
    module = coordinator()
    rounds: list[dict[str, Any]] = []
    round_params, asked = module.first_round(params), sorted(sites)
    while True:
        job = params | round_params
        if round_params.get("relay_site_keys"):
            job["site_keys"] = {n: public_pem(sites[n]["key"]).decode() for n in asked}
        entries = []
        for name in asked:
            if missing(round_params, name):
                entries.append({"site": name, "status": "missing"})
                continue
            out = site_part(name, sites[name], job)
            gated = gate(out["release"], schema, POLICY, job)
            assert gated.ok, (name, job["round"], gated.refusal, gated.detail)
            check_release(gated.released, schema, job, released=True)
            entries.append({"site": name, "status": "released", "release": gated.released,
                            "local": out["local"]})
        rounds.append({"round": round_params["round"], "params": round_params,
                       "sites": entries})
        following = module.next_round(params, rounds)
        if following is None:
            break
        round_params = following
        asked = [e["site"] for e in entries if e["status"] == "released"]
    combined = module.combine(params, rounds)
    result = {"study": STUDY, "version": manifest.name, "params": params,
              "combined": combined}
    (work / "hub").mkdir()
    charts = module.charts(result, rounds, work / "hub")
    return {"rounds": rounds, "combined": combined, "charts": charts, "hub": work / "hub",
            "schema": schema, "work": work, "sites": sites}
