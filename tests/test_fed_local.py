"""Federated nnU-Net, a site's local round: round-0 weights, a local round from the global
weights, FedAvg of two sites' vectors, validation Dice and its release, the model export.

One tiny data set for the module (4 synthetic cases of 48x48 pixels, nnU-Net's own planner
with the demo's small network and a 16x32x32 patch); budgets of 1 epoch x 2 iterations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from radflow.errors import ConfigurationError
from radflow.federation.release import ReleaseSchema

DATASET_ID = 990
DATASET = "Dataset990_FedLocal"
PLANS = "nnUNetPlansFedTiny"
TRAIN, HELD_OUT = ["case_000", "case_001", "case_002"], "case_003"


def _make_raw(work: Path) -> None:
    from radflow.synth import synthesize
    from radflow_nnunet.training import LABELS, write_raw_case

    raw = work / "raw" / DATASET
    for case in synthesize(work / "synth", 4, seed=7, matrix=48):
        write_raw_case(case, raw)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4,
        "file_ending": ".nii.gz", "name": "fed-local-test"}))


def _plan_and_preprocess(work: Path) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from radflow_nnunet.training import SMALL_ARCH

    DatasetFingerprintExtractor(DATASET_ID, 1, verbose=False).run()
    ExperimentPlanner(DATASET_ID).plan_experiment()
    folder = work / "preprocessed" / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    config = plans["configurations"]["3d_fullres"]
    config.update(patch_size=[16, 32, 32], batch_size=2, data_identifier=f"{PLANS}_3d_fullres")
    config["architecture"]["arch_kwargs"].update(SMALL_ARCH)
    plans["configurations"] = {"3d_fullres": config}
    (folder / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))
    DefaultPreprocessor(verbose=False).run(DATASET_ID, "3d_fullres", PLANS, 1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """The tiny data set, planned and preprocessed, and round-0 weights."""
    from radflow_nnunet.federated.local import initial_weights, layout
    from radflow_nnunet.federated.weights import to_vector

    work = tmp_path_factory.mktemp("fedlocal")
    with pytest.MonkeyPatch.context() as mp:
        for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                          ("nnUNet_results", "results")):
            mp.setenv(name, str(work / sub))
        _make_raw(work)
        _plan_and_preprocess(work)
    folder = work / "preprocessed" / DATASET
    plans = json.loads((folder / f"{PLANS}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    raw = work / "raw" / DATASET
    held_out = [(raw / "imagesTr" / f"{HELD_OUT}_0000.nii.gz", raw / "labelsTr" / f"{HELD_OUT}.nii.gz")]
    return {"work": work, "folder": folder, "plans": plans, "dataset_json": dataset_json,
            "layout": layout(plans, dataset_json), "held_out": held_out,
            "w0": to_vector(initial_weights(plans, dataset_json, seed=1))}


def _round(prepared: dict, vector, cases=TRAIN, round_index=0, work="round", seed=3, **kw):
    from radflow_nnunet.federated.local import train_local

    return train_local(prepared["folder"], prepared["plans"], prepared["dataset_json"], vector,
                       cases=cases, epochs=1, iterations=2, round_index=round_index,
                       total_rounds=2, seed=seed, work=prepared["work"] / work, **kw)


def test_initial_weights_follow_the_plan_and_the_seed(prepared: dict) -> None:
    from radflow_nnunet.federated.local import initial_weights
    from radflow_nnunet.federated.weights import to_vector, vector_size

    plans, dataset_json, entries = prepared["plans"], prepared["dataset_json"], prepared["layout"]
    again = initial_weights(plans, dataset_json, seed=1)
    other = initial_weights(plans, dataset_json, seed=2)
    assert [(k, v.shape) for k, v in again.items()] == entries
    assert np.array_equal(to_vector(again), prepared["w0"])
    assert not all(np.array_equal(again[k], other[k]) for k in again)
    assert prepared["w0"].size == vector_size(entries)
    names = [name for name, _ in entries]
    assert not any(n.startswith("decoder.encoder.") for n in names)  # carried once
    assert not any("running_" in n or "num_batches" in n for n in names)  # InstanceNorm


def test_a_round_trains_returns_fp16_and_leaves_no_optimizer_state(prepared: dict) -> None:
    w0 = prepared["w0"]
    first = _round(prepared, w0.astype(np.float16), work="r1")
    assert first.vector_fp16.dtype == np.float16 and first.vector_fp16.shape == w0.shape
    assert np.abs(first.vector_fp16.astype(np.float32) - w0).max() > 1e-3  # it trained
    assert first.cases_trained == 3 and 1 <= first.cases_sampled <= 3
    assert len(first.mean_train_loss) == 1 and math.isfinite(first.mean_train_loss[0])
    assert not list((prepared["work"] / "r1").rglob("*.pth"))  # no checkpoint, no optimizer

    second = _round(prepared, first.vector_fp16, round_index=1, work="r2")
    assert np.abs(second.vector_fp16.astype(np.float32)
                  - first.vector_fp16.astype(np.float32)).max() > 1e-3
    prepared["site_a"] = second.vector_fp16
    # one poly decay over the study (2 rounds x 1 epoch), Adam's 2e-3 at the start
    assert first.learning_rates == pytest.approx([2e-3])
    assert second.learning_rates == pytest.approx([2e-3 * 0.5 ** 0.9])

    again = _round(prepared, w0.astype(np.float16), work="r1-again")
    twice = _round(prepared, w0.astype(np.float16), work="r1-twice")
    assert np.array_equal(again.vector_fp16, twice.vector_fp16)  # same seed, same weights


def test_a_round_refuses_what_does_not_fit(prepared: dict) -> None:
    w0 = prepared["w0"]
    with pytest.raises(ConfigurationError, match="not preprocessed"):
        _round(prepared, w0, cases=["case_000", "case_999"])
    with pytest.raises(ConfigurationError, match="weights"):
        _round(prepared, w0[:-5])
    with pytest.raises(ConfigurationError, match="outside"):
        _round(prepared, w0, round_index=2)


def test_two_sites_averaged_predict_and_release_only_aggregates(prepared: dict) -> None:
    from radflow_nnunet.federated.evaluate import (
        dice_aggregate,
        dice_release,
        dice_release_schema,
        evaluate,
    )

    site_a = prepared.get("site_a")
    if site_a is None:
        site_a = _round(prepared, prepared["w0"], work="a").vector_fp16
    site_b = _round(prepared, prepared["w0"], cases=["case_001", "case_002"], seed=4,
                    work="b").vector_fp16
    mean = ((site_a.astype(np.float32) + site_b.astype(np.float32)) / 2).astype(np.float16)
    per_case = evaluate((prepared["plans"], prepared["dataset_json"], mean), prepared["held_out"])
    assert len(per_case) == 1 and set(per_case[0]) == {"liver", "spleen", "kidney"}
    assert all(0.0 <= v <= 1.0 for v in per_case[0].values())

    many = [{"liver": 0.9, "spleen": 0.5}, {"liver": 0.7, "spleen": math.nan}]
    agg = dice_aggregate(many)
    assert agg["liver"] == pytest.approx({"mean": 0.8, "sd": math.sqrt(0.02), "n": 2})
    assert agg["spleen"] == {"mean": 0.5, "sd": 0.0, "n": 1}
    schema = ReleaseSchema.model_validate(dice_release_schema(["liver", "spleen"]))
    release = dice_release(many)
    assert set(release) == set(schema.fields)
    assert release["n"] == 2 and release["liver_dice_mean"] == pytest.approx(0.8)
    assert {spec.kind for spec in schema.fields.values()} == {"count", "sum"}


def test_an_exported_model_loads_in_the_predictor(prepared: dict, tmp_path: Path) -> None:
    import SimpleITK as sitk
    import torch

    from radflow_nnunet.federated.evaluate import evaluate
    from radflow_nnunet.federated.local import export_model
    from radflow_nnunet.models import _read
    from radflow_nnunet.predictor import load_model, predict

    out = export_model(prepared["plans"], prepared["dataset_json"],
                       prepared["w0"].astype(np.float16), tmp_path / "model",
                       {"name": "fed-test", "version": "0.1"})
    saved = torch.load(out / "fold_all" / "checkpoint_final.pth", weights_only=False)
    assert "optimizer_state" not in saved and "network_weights" in saved
    info = _read(out, builtin=False)
    assert info is not None and info.name == "fed-test" and info.block_fields()["folds"] == ["all"]
    image = sitk.ReadImage(str(prepared["held_out"][0][0]))
    labels = predict(load_model(out, patch_size=[16, 32, 32]), image)
    assert labels.GetSize() == image.GetSize()
    per_case = evaluate(out, prepared["held_out"])
    assert all(0.0 <= v <= 1.0 or math.isnan(v) for v in per_case[0].values())
    with pytest.raises(ConfigurationError, match="no name"):
        export_model(prepared["plans"], prepared["dataset_json"], prepared["w0"],
                     tmp_path / "x", {})
