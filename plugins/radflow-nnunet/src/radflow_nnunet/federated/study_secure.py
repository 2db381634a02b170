"""Secure aggregation in federated-nnunet-training (the study parameter
``secure_aggregation``): the protocol of :mod:`radflow.federation.secagg` in the flow's rounds.

    fingerprint -> keys (each site announces a signed X25519 key for training round 1)
    -> train_secure k (each site masks cases x its clipped update with the pairwise masks of
       round k's keys, and announces its key for round k+1 in the same release)
    -> ... -> validate

The hub relays the announcements, with the site names and the round's key label, in the next
round's parameters, and the sites' enrolled Ed25519 keys (``relay_site_keys``: the hub adds
``site_keys``); each site adds its own study id before it verifies (a signature binds the study,
so a key of another study does not verify). The hub sums the masked vectors and unmasks the
sum only when every participant's vector is in it; when one is missing (a site dropped out after
the keys were agreed), the round runs again with the sites that did release, after a new
``keys`` round (a new key label: ``train-K-aN``). A site keeps its trained update for the round
(by the global weights' hash), so a rerun masks it again without training again.

What the hub learns in a secure round: each site's cases count and loss, and the sum; never one
site's weights (see :mod:`radflow.federation.secagg` for the limits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from radflow.federation import secagg
from radflow.federation.fedavg import clip_update
from radflow.federation.weights import decode, encode

KEYS = "round-keys"


def key_label(iteration: int, attempt: int) -> str:
    return f"train-{int(iteration)}-a{int(attempt)}"


def fixed_point(params: dict[str, Any]) -> secagg.FixedPoint:
    return secagg.FixedPoint(frac_bits=int(params.get("secure_frac_bits", 20)),
                             bound=float(params.get("secure_bound", 1.0)),
                             max_total_cases=int(params.get("secure_max_cases", 1000)))


# -- the site's part -------------------------------------------------------------------------
def _site_key(site_folder: Path) -> Any:
    from radflow.federation.client import federation_dir
    from radflow.federation.signing import load

    return load(federation_dir(site_folder) / "site.key")


def announce_key(folder: Path, site: str, study: str, label: str, site_folder: Path
                 ) -> dict[str, str]:
    """A new round key for ``label``, kept at the site, announced signed (what is released)."""
    key = secagg.new_round_key(site, study, label)
    secagg.keep_round_key(key, folder / KEYS)
    signed = secagg.announce(key, _site_key(site_folder))
    return {"public_key": signed["public_key"], "signature": signed["signature"]}


def keys_round(folder: Path, site: str, study: str, site_folder: Path,
               params: dict[str, Any]) -> dict[str, Any]:
    from radflow_nnunet.federated.study_site import read_state

    state = read_state(folder)
    return {"local": {"label": params["label"]},
            "release": {"n": len(state["train"]),
                        "key": announce_key(folder, site, study, params["label"], site_folder)}}


def _trained(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """This round's local training (kept by the global weights' hash: a rerun of the round
    masks the same update again instead of training again)."""
    from radflow_nnunet.federated.study_site import train_round

    digest = params["global_weights"]["sha256"][:16]
    cache = folder / "rounds" / f"{int(params['iteration'])}-{digest}"
    if (cache / "release.json").exists():
        out = json.loads((cache / "release.json").read_text())
        out["vector"] = np.load(cache / "vector.npy")
        return out
    done = train_round(folder, params)
    release = done["release"]
    out = {"n": release["n"], "loss": release["loss"], "local": done["local"]}
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "vector.npy", decode(release["weights"]))
    (cache / "release.json").write_text(json.dumps(out))
    out["vector"] = decode(release["weights"])
    return out


def secure_train_round(folder: Path, site: str, study: str, site_folder: Path,
                       params: dict[str, Any]) -> dict[str, Any]:
    """Train (or find this round's training), mask cases x the clipped update with the
    round's pairwise masks, announce the next round's key."""
    label, iteration = params["label"], int(params["iteration"])
    key = secagg.take_round_key(folder / KEYS, site, study, label)
    known = {name: pem.encode() for name, pem in (params.get("site_keys") or {}).items()}
    announced = params["announcements"]
    peers = secagg.verify_announcements([{**a, "study": study} for a in announced], known,
                                        study, label, [a["site"] for a in announced])
    trained = _trained(folder, params)
    start = decode(params["global_weights"]).astype(np.float32)
    clip = params.get("clip_norm")
    update, _, _ = clip_update(trained["vector"].astype(np.float32) - start,
                               None if clip is None else float(clip))
    masked = secagg.mask_contribution(key, peers, update, int(trained["n"]),
                                      fixed_point(params))
    return {"local": {**trained["local"], "label": label},
            "release": {"n": int(trained["n"]), "masked": encode(masked, "uint32"),
                        "loss": float(trained["loss"]),
                        "next_key": announce_key(folder, site, study,
                                                 key_label(iteration + 1, 1), site_folder)}}


# -- the hub's part --------------------------------------------------------------------------
def _released(done: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in done["sites"] if s["status"] == "released"]


def announcements(done: dict[str, Any], field: str, label: str) -> list[dict[str, str]]:
    return [{"site": s["site"], "round": label, **s["release"][field]} for s in _released(done)]


def carried(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan and the global weights the study is at (the last round that sent them)."""
    for done in reversed(rounds):
        if "global_weights" in done["params"]:
            return {k: done["params"][k] for k in ("plan", "global_weights", "parameters")}
    raise ValueError("no round sent the global weights")


def next_secure(params: dict[str, Any], rounds: list[dict[str, Any]], quorum: int
                ) -> dict[str, Any] | None:
    """The round after a ``keys`` or ``train_secure`` round (None: the study stops)."""
    done = rounds[-1]
    name = done["params"]["round"]
    iteration, attempt = int(done["params"]["iteration"]), int(done["params"]["attempt"])
    if name == "keys":
        label = done["params"]["label"]
        return {"round": "train_secure", "iteration": iteration, "attempt": attempt,
                "label": label, "announcements": announcements(done, "key", label),
                "relay_site_keys": True, **carried(rounds)}
    participants = [a["site"] for a in done["params"]["announcements"]]
    released = _released(done)
    status = secagg.sum_status(participants, [s["site"] for s in released])
    if not status.complete:  # a site dropped out after masking: again, without it
        if len(status.rerun_with) < max(2, quorum):
            return None
        return {"round": "keys", "iteration": iteration, "attempt": attempt + 1,
                "label": key_label(iteration, attempt + 1)}
    weights, _ = unmask(params, rounds)
    following = {"plan": done["params"]["plan"], "parameters": int(weights.size),
                 "global_weights": encode(weights.astype(np.float16))}
    if iteration < int(params.get("rounds", 1)):
        label = key_label(iteration + 1, 1)
        return {"round": "train_secure", "iteration": iteration + 1, "attempt": 1,
                "label": label, "announcements": announcements(done, "next_key", label),
                "relay_site_keys": True, **following}
    return {"round": "validate", **following}


def unmask(params: dict[str, Any], rounds: list[dict[str, Any]]) -> tuple[np.ndarray, int]:
    """The new global weights from a complete secure round: the masked sum, unmasked."""
    done = rounds[-1]
    released = _released(done)
    start = decode(done["params"]["global_weights"]).astype(np.float32)
    return secagg.unmask_mean(start, {s["site"]: decode(s["release"]["masked"])
                                      for s in released},
                              {s["site"]: int(s["release"]["n"]) for s in released},
                              [a["site"] for a in done["params"]["announcements"]],
                              fixed_point(params))
