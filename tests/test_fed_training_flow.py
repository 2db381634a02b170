"""The federated-nnunet-training flow package, driven as the hub drives it (the coordinator
between rounds) with the real site parts in this process: three tiny sites, the fingerprint,
two FedAvg rounds, the validation, the model package. Every release goes through the site's gate
and the hub's check of the signed release schema. (The same flow over real sites, the agent and
the hub is the end-to-end test's business.)"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import yaml
from fed_flow import FLOW, PARAMS, SITES, coordinator, drive

from radflow.federation.egress import gate
from radflow.federation.policy import SitePolicy


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Any]:
    """The whole study, round by round, as radflow.hub.studies.run_study runs it."""
    return drive(tmp_path_factory.mktemp("fedflow"), PARAMS)


def test_the_rounds_are_a_fingerprint_two_fedavg_rounds_and_a_validation(study) -> None:
    rounds = study["rounds"]
    assert [(r["round"], r["params"].get("iteration")) for r in rounds] == [
        ("fingerprint", None), ("train", 1), ("train", 2), ("validate", None)]
    plan = rounds[1]["params"]["plan"]
    assert plan["plans"]["configurations"]["3d_fullres"]["patch_size"] == [16, 32, 32]
    # every site trained from the global weights it was sent and released fp16 of that size
    parameters = rounds[1]["params"]["parameters"]
    for done in rounds[1:3]:
        for entry in done["sites"]:
            assert entry["release"]["weights"]["dtype"] == "float16"
            assert entry["release"]["weights"]["shape"] == [parameters]
    # the next round's global weights are the cases-weighted average of the releases
    from radflow.federation.weights import decode

    first = rounds[1]
    expected = sum(decode(e["release"]["weights"]).astype(np.float64) * e["release"]["n"]
                   for e in first["sites"]) / sum(e["release"]["n"] for e in first["sites"])
    got = decode(rounds[2]["params"]["global_weights"]).astype(np.float64)
    assert np.max(np.abs(got - expected)) < 2e-3  # fp16 of the average
    assert not np.array_equal(decode(rounds[1]["params"]["global_weights"]),
                              decode(rounds[2]["params"]["global_weights"]))


def test_the_result_reports_loss_bytes_cases_and_validation(study) -> None:
    combined = study["combined"]
    assert combined["finished"] is True and combined["rounds_trained"] == 2
    assert combined["cases_per_site"] == {"essen": 2, "leiden": 2, "zurich": 3}
    for entry in combined["training"]:
        assert entry["loss"] is not None and entry["sites"] == 3 and entry["cases"] == 7
        # fp16 in base64: ~2.7 bytes a parameter, well under the fp32 checkpoint's 12
        for size in entry["bytes"].values():
            assert 2 * combined["parameters"] < size < 4 * combined["parameters"]
    assert combined["fp32_checkpoint_bytes"] == 12 * combined["parameters"]
    for site, organs in combined["validation"].items():
        for organ, values in organs.items():
            assert values["n"] == 1 and 0.0 <= values["mean"] <= 1.0, (site, organ, values)


def test_the_model_package_loads_in_the_predictor(study) -> None:
    from radflow_nnunet.predictor import load_model

    model = study["hub"] / "model"
    card = json.loads((model / "radflow-model.json").read_text())
    assert card["name"] == "fed-test"
    assert card["federated"]["rounds"] == 2
    assert sorted(card["federated"]["sites"]) == sorted(SITES)
    assert (study["hub"] / "loss.png").stat().st_size > 0
    assert (study["hub"] / "dice.png").stat().st_size > 0
    assert load_model(model) is not None


def test_the_flow_package_declares_what_the_code_releases() -> None:
    from radflow_nnunet.federated.evaluate import dice_release_schema
    from radflow_nnunet.federated.fingerprint import round_schema

    declared = yaml.safe_load((FLOW / "radflow-flow.yaml").read_text())["release_schema"]
    assert declared["rounds"]["fingerprint"] == round_schema()
    assert declared["rounds"]["validate"] == dice_release_schema(["liver", "spleen", "kidney"])


def test_a_site_without_weights_allowed_refuses_and_no_quorum_stops_the_study(study) -> None:
    module = coordinator()
    train = study["rounds"][1]
    job = PARAMS | train["params"]
    refused = gate(train["sites"][0]["release"], study["schema"], SitePolicy(min_cohort=2), job)
    assert refused.refusal == "policy_violation:weights"
    one = [{**train, "sites": [train["sites"][0]] + [
        {"site": s["site"], "status": "refused", "refusal": "policy_violation:weights"}
        for s in train["sites"][1:]]}]
    assert module.next_round(PARAMS, study["rounds"][:1] + one) is None
    combined = module.combine(PARAMS, study["rounds"][:1] + one)
    assert combined["finished"] is False and "quorum" in combined["note"]
    assert combined["sites_not_in"] == {"leiden": "policy_violation:weights",
                                        "zurich": "policy_violation:weights"}


def test_the_agent_knows_which_rounds_release_weights(study) -> None:
    # (a site whose policy does not allow weights refuses those jobs before its worker trains)
    from radflow.federation.agent import releases_weights

    schema = study["schema"]
    assert releases_weights(schema, {"round": "train"})
    assert not releases_weights(schema, {"round": "fingerprint"})
    assert not releases_weights(schema, {"round": "validate"})
    assert not releases_weights(schema, {"round": "no-such-round"})
