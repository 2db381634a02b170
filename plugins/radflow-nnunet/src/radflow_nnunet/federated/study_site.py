"""The site part of the federated-nnunet-training flow: one function per round, each returning
``{"local": ..., "release": ...}`` (only ``release`` goes on, through the site's gate).

Rounds (the job parameter ``round``):

- ``fingerprint``: select the cohort's reviewed labels (:mod:`.labels`: the series whose current
  segmentation is accepted or a correction, read from Orthanc as DICOM SEG), write them as an
  nnU-Net raw dataset split by the study's seed into training and held-out cases, and release
  the site's part of the federated fingerprint (:mod:`.fingerprint`).
- ``train``: preprocess the training cases with the study's shared plan (once per plan), train
  ``epochs`` x ``iterations`` batches from the global weights (:mod:`.local`), release the
  weights in fp16 (no optimizer state) with the number of cases trained and the round's loss.
- ``validate``: evaluate the global weights on the held-out cases; release Dice per organ as
  mean, sd and n (:mod:`.evaluate`), never per case.

Everything a study keeps at the site lives in ``<site folder>/studies/<study>/nnunet/``: the
raw dataset, the preprocessed cases, the split (``state.json``). Nothing there leaves the site.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from radflow.errors import ConfigurationError
from radflow.federation.weights import decode, encode
from radflow_nnunet.federated.fingerprint import FingerprintParams, site_fingerprint

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
DATASET = "Dataset601_RadflowFederated"


def study_folder(site_folder: Path, study: str) -> Path:
    if not study or "/" in study or study.startswith("."):
        raise ConfigurationError(f"study {study!r} is no study id",
                                 fix="the site part runs as a job of a hub study")
    return site_folder / "studies" / study / "nnunet"


def write_state(folder: Path, state: dict[str, Any]) -> Path:
    """The split the later rounds train and evaluate on (owner-only; never released)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "state.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)
    os.replace(tmp, path)
    return path


def read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        raise ConfigurationError(f"this site has no training set for the study ({folder})",
                                 fix="the study's fingerprint round builds it: the site takes "
                                     "part from the study's first round") from None


def fingerprint_round(folder: Path, raw: Path, train: list[str], held_out: list[str],
                      params: dict[str, Any]) -> dict[str, Any]:
    """Round 0 over a raw dataset already written: record the split, release the fingerprint."""
    write_state(folder, {"raw": str(raw), "train": sorted(train), "held_out": sorted(held_out)})
    fields = {k: params[k] for k in FingerprintParams.model_fields if k in params}
    release = site_fingerprint(raw, FingerprintParams(**fields))
    return {"local": {"train": len(train), "held_out": len(held_out)}, "release": release}


def _plan_key(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def preprocessed(folder: Path, state: dict[str, Any], plan: dict[str, Any]) -> Path:
    """The site's training cases preprocessed with the shared plan (once per plan; a rerun of
    the round, after a crash, finds them)."""
    from radflow_nnunet.federated.plan import preprocess_with_plan

    marker = folder / "preprocessed.json"
    key = _plan_key(plan)
    try:
        done = json.loads(marker.read_text())
        if done.get("plan") == key and Path(done["folder"]).is_dir():
            return Path(done["folder"])
    except (OSError, ValueError, KeyError):
        pass
    out = preprocess_with_plan(Path(state["raw"]), plan["plans"], plan["dataset_json"],
                               folder / "preprocessed")
    marker.write_text(json.dumps({"plan": key, "folder": str(out)}))
    return out


def train_round(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One FedAvg round at the site: E x I batches from the global weights."""
    from radflow_nnunet.federated.local import train_local

    state = read_state(folder)
    plan = params["plan"]
    data = preprocessed(folder, state, plan)
    result = train_local(data, plan["plans"], plan["dataset_json"],
                         decode(params["global_weights"]), cases=state["train"],
                         epochs=int(params.get("epochs", 1)),
                         iterations=int(params.get("iterations", 30)),
                         round_index=int(params["iteration"]) - 1,
                         total_rounds=int(params.get("rounds", 1)),
                         seed=int(params.get("seed", 0)), work=folder / "work")
    loss = float(result.mean_train_loss[-1]) if result.mean_train_loss else 0.0
    return {"local": {"seconds": round(result.seconds, 2), "cases_sampled": result.cases_sampled,
                      "losses": [float(v) for v in result.mean_train_loss]},
            "release": {"n": int(result.cases_trained),
                        "weights": encode(np.asarray(result.vector_fp16, dtype=np.float16)),
                        "loss": loss}}


def validate_round(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Dice per organ of the global weights on the held-out cases (aggregates only)."""
    from radflow_nnunet.federated.evaluate import dice_release, evaluate

    state = read_state(folder)
    raw = Path(state["raw"])
    plan = params["plan"]
    ending = plan["dataset_json"].get("file_ending", ".nii.gz")
    cases = [(raw / "imagesTs" / f"{c}_0000{ending}", raw / "labelsTs" / f"{c}{ending}")
             for c in state["held_out"]]
    per_case = evaluate((plan["plans"], plan["dataset_json"],
                         decode(params["global_weights"])), cases)
    return {"local": {"cases": len(cases)}, "release": dice_release(per_case)}


def run_round(params: dict[str, Any], *, site: str | None, study: str | None) -> dict[str, Any]:
    """The job's round at this site (what the flow package's ``site.py`` calls)."""
    from radflow_nnunet.federated.labels import build_training_set, site_data

    data = site_data(site)
    folder = study_folder(data.folder, study or "")
    name = params.get("round")
    if name == "fingerprint":
        raw = folder / "raw" / DATASET
        built = build_training_set(site, params["cohort"], LABELS, raw, study=study,
                                   seed=int(params.get("seed", 0)),
                                   held_out_fraction=float(params.get("held_out", 0.2)))
        out = fingerprint_round(folder, raw, built.train, built.held_out, params)
        out["local"] |= {"skipped": [{"case": s.case_id, "reason": s.reason}
                                     for s in built.skipped],
                         "unlabelled": built.unlabelled}
        return out
    if name == "train":
        return train_round(folder, params)
    if name in ("keys", "train_secure"):
        from radflow_nnunet.federated import study_secure

        run = study_secure.keys_round if name == "keys" else study_secure.secure_train_round
        return run(folder, data.folder.name, study, data.folder, params)
    if name == "validate":
        return validate_round(folder, params)
    raise ConfigurationError(f"federated-nnunet-training has no round {name!r}",
                             fix="the hub names the round (fingerprint, keys, train, "
                                 "train_secure, validate)")
