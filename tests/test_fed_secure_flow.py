"""federated-nnunet-training with secure aggregation, driven as the hub drives it over three
tiny sites (tests/fed_flow.py): the hub sees only masked updates and their sum; the global
weights it unmasks equal plain FedAvg of the sites' updates within fp16 tolerance; a site that
drops out after masking makes the round run again without it, and the others do not train
again; a forged key stops a site from masking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fed_flow import PARAMS, STUDY, drive

from radflow.errors import FederationError
from radflow.federation.signing import public_pem
from radflow.federation.weights import decode

SECURE = PARAMS | {"secure_aggregation": True}


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> dict[str, Any]:
    return drive(tmp_path_factory.mktemp("fedsecure"), SECURE)


def _trained(site: dict[str, Any], iteration: int) -> np.ndarray:
    (cache,) = (site.state / "rounds").glob(f"{iteration}-*")
    return np.load(cache / "vector.npy")


def test_the_hub_holds_masked_updates_whose_sum_is_fedavg(secure) -> None:
    rounds = secure["rounds"]
    assert [(r["round"], r["params"].get("label")) for r in rounds] == [
        ("fingerprint", None), ("keys", "train-1-a1"), ("train_secure", "train-1-a1"),
        ("train_secure", "train-2-a1"), ("validate", None)]
    first = rounds[2]
    start = decode(first["params"]["global_weights"]).astype(np.float64)
    cases = {e["site"]: e["release"]["n"] for e in first["sites"]}
    for entry in first["sites"]:  # what the hub holds: uint32, unlike the site's weights
        masked = decode(entry["release"]["masked"])
        assert masked.dtype == np.uint32
        own = _trained(secure["sites"][entry["site"]], 1).astype(np.float64)
        assert np.corrcoef(masked.astype(np.float64), own)[0, 1] < 0.05
    plain = start + sum((_trained(secure["sites"][s], 1).astype(np.float64) - start) * n
                        for s, n in cases.items()) / sum(cases.values())
    unmasked = decode(rounds[3]["params"]["global_weights"]).astype(np.float64)
    assert np.max(np.abs(unmasked - plain)) < 2e-3  # fp16 of the average (and fixed point)
    assert np.max(np.abs(unmasked - start)) > 1e-4  # it moved
    combined = secure["combined"]
    assert combined["finished"] and combined["rounds_trained"] == 2
    assert all(t["secure"] for t in combined["training"])
    assert (secure["hub"] / "model" / "radflow-model.json").exists()


def test_a_site_that_drops_out_after_masking_makes_the_round_run_again(tmp_path) -> None:
    def zurich_drops(round_params: dict[str, Any], site: str) -> bool:
        return site == "zurich" and round_params.get("label") == "train-1-a1" and \
            round_params["round"] == "train_secure"

    run = drive(tmp_path, SECURE, missing=zurich_drops)
    rounds = run["rounds"]
    assert [(r["round"], r["params"].get("label")) for r in rounds] == [
        ("fingerprint", None), ("keys", "train-1-a1"), ("train_secure", "train-1-a1"),
        ("keys", "train-1-a2"), ("train_secure", "train-1-a2"),
        ("train_secure", "train-2-a1"), ("validate", None)]
    assert [e["site"] for e in rounds[4]["sites"]] == ["essen", "leiden"]
    assert rounds[4]["params"]["global_weights"] == rounds[2]["params"]["global_weights"]
    for name in ("essen", "leiden"):  # the rerun masked the same update: trained once
        assert len(list((run["sites"][name].state / "rounds").glob("1-*"))) == 1
    combined = run["combined"]
    assert combined["finished"] and combined["rounds_trained"] == 2  # the failed one is not
    assert combined["cases_per_site"] == {"essen": 2, "leiden": 2}
    assert combined["sites_not_in"] == {"zurich": "missing"}


def test_a_forged_key_stops_a_site_from_masking(secure) -> None:
    from radflow_nnunet.federated.study_secure import keys_round, secure_train_round

    site = secure["sites"]["essen"]
    done = secure["rounds"][3]  # train-2-a1: the keys were each site's next_key
    params = SECURE | done["params"] | {"label": "train-9-a1", "iteration": 9}
    keys_round(site.state, "essen", STUDY, site.folder, params)  # essen's own key
    # the last round's signed keys, relabelled for this round: their signatures bind their own
    forged = [dict(a, round="train-9-a1") for a in done["params"]["announcements"]]
    params |= {"announcements": forged,
               "site_keys": {n: public_pem(s.key).decode()
                             for n, s in secure["sites"].items()}}
    with pytest.raises(FederationError, match="does not verify"):
        secure_train_round(site.state, "essen", STUDY, site.folder, params)
