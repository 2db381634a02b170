"""The coordinator part of the federated-nnunet-training flow (runs on the hub, between rounds:
see :mod:`radflow.hub.coordinator` for the contract).

    fingerprint -> (merge: one nnU-Net plan; round-0 weights from the plan and the seed)
    train 1 .. train R -> (FedAvg of the released fp16 weights, weighted by cases trained,
                          each site's update clipped to ``clip_norm`` when the study sets one)
    validate -> (Dice per organ per site, as the sites released them: mean, sd, n)

A round goes on when at least ``quorum`` sites released in it (the hub waits for every asked
site or the deadline); otherwise the study stops there and says so. Only the sites that released
are asked in the next round (the hub's rule). The global weights travel in the round's
parameters as fp16 (what the sites train from), so a study that resumes after a hub crash
replays its rounds from the hub's database and reaches the same weights.

The model (plans, dataset.json, weights-only checkpoint, model card) is written with the
study's charts into the study's folder on the hub (``model/``); ``combine`` returns only
numbers: per-round loss, bytes per round and site, cases per site, validation Dice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radflow.federation.fedavg import SiteWeights, fedavg
from radflow.federation.weights import checkpoint_bytes, decode, encode, wire_bytes
from radflow_nnunet.federated.fingerprint import FingerprintParams
from radflow_nnunet.federated.study_site import LABELS

ORGANS = [name for name in LABELS if name != "background"]


TRAINING = ("train", "train_secure")


def _complete(done: dict[str, Any]) -> bool:
    """A training round whose releases were averaged (a secure one: every participant's)."""
    if done["params"].get("round") != "train_secure":
        return True
    released = {s["site"] for s in done["sites"] if s["status"] == "released"}
    return {a["site"] for a in done["params"]["announcements"]} <= released


def _released(done: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in done["sites"] if s["status"] == "released"]


def _quorum(params: dict[str, Any]) -> int:
    return max(1, int(params.get("quorum", 2)))


def first_round(params: dict[str, Any]) -> dict[str, Any]:
    fields = {k: params[k] for k in FingerprintParams.model_fields if k in params}
    return FingerprintParams(**fields).job()


def _plan(params: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    from radflow_nnunet.federated.plan import federated_plan
    from radflow_nnunet.federated.weights import initial_weights, to_vector

    fields = {k: done["params"][k] for k in FingerprintParams.model_fields
              if k in done["params"]}
    extra = {k: params[k] for k in ("patch", "batch_size") if params.get(k) is not None}
    plan = federated_plan([s["release"] for s in _released(done)], FingerprintParams(**fields),
                          LABELS, **extra)
    vector = to_vector(initial_weights(plan.plans, plan.dataset_json, int(params.get("seed", 0))))
    return {"plan": {"plans": plan.plans, "dataset_json": plan.dataset_json},
            "global_weights": encode(vector.astype(np.float16)), "parameters": int(vector.size)}


def _average(params: dict[str, Any], done: dict[str, Any]) -> tuple[np.ndarray, Any]:
    start = decode(done["params"]["global_weights"]).astype(np.float32)
    sites = [SiteWeights(s["site"], decode(s["release"]["weights"]), int(s["release"]["n"]))
             for s in _released(done)]
    clip = params.get("clip_norm")
    result = fedavg(start, sites, None if clip is None else float(clip))
    return result.weights, result


def next_round(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = rounds[-1]
    if len(_released(done)) < _quorum(params):
        return None  # no quorum: the study stops here (combine says so)
    name = done["params"].get("round")
    secure = bool(params.get("secure_aggregation"))
    if name == "fingerprint" and secure:
        from radflow_nnunet.federated.study_secure import key_label

        return {"round": "keys", "iteration": 1, "attempt": 1, "label": key_label(1, 1),
                **_plan(params, done)}
    if name in ("keys", "train_secure"):
        from radflow_nnunet.federated.study_secure import next_secure

        return next_secure(params, rounds, _quorum(params))
    if name == "fingerprint":
        return {"round": "train", "iteration": 1, **_plan(params, done)}
    if name == "train":
        weights, _ = _average(params, done)
        carried = {"plan": done["params"]["plan"], "parameters": int(weights.size),
                   "global_weights": encode(weights.astype(np.float16))}
        iteration = int(done["params"]["iteration"])
        if iteration < int(params.get("rounds", 1)):
            return {"round": "train", "iteration": iteration + 1, **carried}
        return {"round": "validate", **carried}
    return None


def combine(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    training = []
    for done in rounds:
        if done["params"].get("round") not in TRAINING or not _complete(done):
            continue
        parts = _released(done)
        cases = sum(int(s["release"]["n"]) for s in parts)
        training.append({
            "round": int(done["params"]["iteration"]),
            "sites": len(parts),
            "cases": cases,
            "loss": (sum(float(s["release"]["loss"]) * int(s["release"]["n"]) for s in parts)
                     / cases) if cases else None,
            "bytes": {s["site"]: wire_bytes(s["release"]) for s in parts},
            "secure": done["params"].get("round") == "train_secure",
            "seconds": round(float(done.get("seconds", 0.0)), 1)})
    last = rounds[-1]
    finished = last["params"].get("round") == "validate" and bool(_released(last))
    parameters = int(last["params"].get("parameters") or 0)
    out: dict[str, Any] = {
        "finished": finished,
        "rounds_trained": len(training),
        "training": training,
        "quorum": _quorum(params),
        "parameters": parameters,
        "fp32_checkpoint_bytes": checkpoint_bytes(parameters) if parameters else None,
        "cases_per_site": {s["site"]: int(s["release"]["n"]) for done in rounds
                           if done["params"].get("round") in TRAINING for s in _released(done)},
        "sites_not_in": {s["site"]: s.get("refusal", "missing") for done in rounds
                         for s in done["sites"] if s["status"] != "released"},
    }
    if not finished:
        out["note"] = (f"stopped after round {last['params'].get('round')!r}: fewer than the "
                       f"quorum of {_quorum(params)} sites released")
    if last["params"].get("round") == "validate":
        out["validation"] = {s["site"]: {organ: {k: s["release"].get(f"{organ}_dice_{k}")
                                                 for k in ("mean", "sd", "n")}
                                         for organ in ORGANS} for s in _released(last)}
    return out


def final_weights(rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray] | None:
    """The study's model: the plan and the weights the validation round evaluated."""
    last = rounds[-1]["params"]
    if last.get("round") != "validate":
        return None
    return last["plan"], decode(last["global_weights"])


def write_model(result: dict[str, Any], rounds: list[dict[str, Any]], folder: Path) -> Path | None:
    """The model package in the study's folder: plans, dataset.json, weights, model card."""
    from radflow_nnunet.federated.weights import export_model

    final = final_weights(rounds)
    if final is None or not result["combined"].get("finished"):
        return None
    plan, vector = final
    combined = result["combined"]
    card = {"name": result["params"].get("model_name", "radflow-abdomen-federated"),
            "version": f"{result['study']}",
            "labels": plan["dataset_json"]["labels"],
            "federated": {"study": result["study"], "flow_version": result.get("version"),
                          "sites": sorted(combined["cases_per_site"]),
                          "rounds": combined["rounds_trained"],
                          "cases_per_site": combined["cases_per_site"],
                          "validation": combined.get("validation", {})}}
    return export_model(plan["plans"], plan["dataset_json"], vector, folder / "model", card)


def charts(result: dict[str, Any], rounds: list[dict[str, Any]], folder: Path) -> list[str]:
    """The loss per round and the validation Dice per site and organ (PNG); the model package
    is written beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_model(result, rounds, folder)
    combined = result["combined"]
    names = []
    training = [t for t in combined["training"] if t["loss"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([t["round"] for t in training], [t["loss"] for t in training], marker="o")
    ax.set_xlabel("round")
    ax.set_xticks([t["round"] for t in training])  # whole rounds only
    ax.set_ylabel("training loss (cases-weighted)")
    ax.set_title("Federated training")
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=100)
    plt.close(fig)
    names.append("loss.png")
    validation = combined.get("validation") or {}
    if validation:
        sites = sorted(validation)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.8 / max(1, len(sites))
        for k, site in enumerate(sites):
            means = [validation[site][o]["mean"] or 0.0 for o in ORGANS]
            ax.bar(np.arange(len(ORGANS)) + k * width, means, width, label=site)
        ax.set_xticks(np.arange(len(ORGANS)) + width * (len(sites) - 1) / 2, ORGANS)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice on held-out cases")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "dice.png", dpi=100)
        plt.close(fig)
        names.append("dice.png")
    return names
