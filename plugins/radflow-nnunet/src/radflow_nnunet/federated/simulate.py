"""The federated-nnunet-training flow run in one process: the hub's part (its coordinator between
rounds, the relay of the sites' enrolled keys, the release schema's check) and each site's part
(every release through that site's egress gate), round by round as
:func:`radflow.hub.studies.run_study` drives them, over raw datasets on this machine. For the
benchmark (bench/bench_federated_training.py) and the flow's tests; a real study runs the same
parts through the hub and the sites' agents.

Example:
    ```python
    from radflow_nnunet.federated.simulate import SimSite, simulate

    sites = {"essen": SimSite.make(work / "essen", raw, train=["c1", "c2"], held_out=["c3"])}
    study = simulate(FLOW, sites, {"cohort": {...}, "rounds": 2, "quorum": 1})
    print(study["combined"]["validation"], study["hub"] / "model")
    ```
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY = "st-sim"


@dataclass(frozen=True)
class SimSite:
    """A site of the simulation: its nnU-Net raw dataset (train cases in imagesTr, held-out ones
    in imagesTs), its folder with the Ed25519 key it enrolled with, its study state folder."""

    raw: Path
    train: list[str]
    held_out: list[str]
    folder: Path
    state: Path
    key: Any

    @classmethod
    def make(cls, work: Path, raw: Path, train: list[str], held_out: list[str]) -> SimSite:
        from radflow.federation.signing import generate

        folder = work / "site"
        (folder / "federation").mkdir(parents=True, exist_ok=True)
        key = generate(folder / "federation" / "site.key")
        return cls(raw, list(train), list(held_out), folder, work / "state", key)


def load_coordinator(flow: Path) -> Any:
    """The flow package's coordinator module, loaded as the hub loads it."""
    spec = importlib.util.spec_from_file_location(f"coordinator_{flow.name.replace('-', '_')}",
                                                  flow / "coordinator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def site_part(name: str, site: SimSite, job: dict[str, Any], study: str = STUDY) -> dict[str, Any]:
    """One site's part of one round (what its flow run does for the job)."""
    from radflow_nnunet.federated import study_secure, study_site

    kind = job["round"]
    if kind == "fingerprint":
        return study_site.fingerprint_round(site.state, site.raw, site.train, site.held_out, job)
    if kind == "train":
        return study_site.train_round(site.state, job)
    if kind == "keys":
        return study_secure.keys_round(site.state, name, study, site.folder, job)
    if kind == "train_secure":
        return study_secure.secure_train_round(site.state, name, study, site.folder, job)
    return study_site.validate_round(site.state, job)


def simulate(flow: Path, sites: dict[str, SimSite], params: dict[str, Any], hub: Path, *,
             policy: Any = None, study: str = STUDY,
             missing: Callable[[dict[str, Any], str], bool] = lambda _r, _s: False
             ) -> dict[str, Any]:
    """The whole study, round by round, with the model package and charts written to ``hub``.
    ``missing(round_params, site)``: that site does not answer that round (reported missing, as
    at the hub's deadline). Each round records each site's seconds and the hub's (the
    coordinator's and the checks')."""
    from radflow.federation.bundle import build
    from radflow.federation.egress import gate
    from radflow.federation.policy import SitePolicy
    from radflow.federation.signing import public_pem
    from radflow.federation.structure import check_release

    policy = policy or SitePolicy(min_cohort=1, min_cell=1, allow_weights=True)
    manifest, _ = build(flow, "simulation@hub")
    schema = manifest.release_schema
    module = load_coordinator(flow)
    rounds: list[dict[str, Any]] = []
    round_params, asked = module.first_round(params), sorted(sites)
    hub_seconds = 0.0
    while True:
        job = params | round_params
        if round_params.get("relay_site_keys"):
            job["site_keys"] = {n: public_pem(sites[n].key).decode() for n in asked}
        entries, seconds = [], {}
        for name in asked:
            if missing(round_params, name):
                entries.append({"site": name, "status": "missing"})
                continue
            began = time.perf_counter()
            out = site_part(name, sites[name], job, study)
            gated = gate(out["release"], schema, policy, job)
            seconds[name] = time.perf_counter() - began
            if not gated.ok:
                entries.append({"site": name, "status": "refused", "refusal": gated.refusal,
                                "detail": gated.detail})
                continue
            began = time.perf_counter()
            check_release(gated.released, schema, job, released=True)  # (the hub's check)
            hub_seconds += time.perf_counter() - began
            entries.append({"site": name, "status": "released", "release": gated.released,
                            "local": out["local"]})
        rounds.append({"round": round_params["round"], "params": round_params,
                       "sites": entries, "site_seconds": seconds, "hub_seconds": hub_seconds})
        began = time.perf_counter()
        following = module.next_round(params, rounds)
        hub_seconds = time.perf_counter() - began  # (counted into the next round)
        if following is None:
            break
        round_params = following
        asked = [e["site"] for e in entries if e["status"] == "released"]
    combined = module.combine(params, rounds)
    result = {"study": study, "version": manifest.name, "params": params, "combined": combined}
    hub.mkdir(parents=True, exist_ok=True)
    charts = module.charts(result, rounds, hub)
    return {"rounds": rounds, "combined": combined, "charts": charts, "hub": hub,
            "schema": schema}
