"""Round 0 of federated nnU-Net: three sites' fingerprint releases merged into one plan, checked
against nnU-Net's own fingerprint extractor and planner run on the POOLED data; the gate on a
fingerprint release; preprocessing with the shared plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from radflow.errors import ConfigurationError, FederationError
from radflow.federation.egress import gate
from radflow.federation.policy import SitePolicy
from radflow.federation.release import ReleaseSchema
from radflow_nnunet.federated.fingerprint import (
    ROUND,
    FingerprintParams,
    release_schema,
    round_schema,
    site_fingerprint,
)
from radflow_nnunet.federated.plan import (
    federated_plan,
    merge_fingerprints,
    nnunet_folders,
    preprocess_with_plan,
)
from radflow_nnunet.training import LABELS, PATCH, SMALL_ARCH

# three hospitals: their own seeds (vendors, slice thickness 4 or 5 mm, habitus) and matrices
SITES = {"a": (11, 4, 48), "b": (22, 3, 40), "c": (33, 3, 32)}  # seed, cases, matrix
SAMPLES = 2000  # foreground samples per case; nnU-Net's extractor is given the same budget
POOLED = "Dataset602_RadflowPooled"
PARAMS = FingerprintParams(samples_per_case=SAMPLES)


def write_raw(raw: Path, cases: list[tuple[str, Path, Path]]) -> None:
    """An nnU-Net raw dataset as training.py's make_dataset writes it (images read from the
    DICOM series, int16)."""
    import SimpleITK as sitk

    from radflow_nnunet.training import read_series

    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for name, dicom_dir, labels_path in cases:
        image = read_series(dicom_dir)
        labels = sitk.ReadImage(str(labels_path))
        labels.CopyInformation(image)
        sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(raw / "imagesTr" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(labels, str(raw / "labelsTr" / f"{name}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": len(cases),
        "file_ending": ".nii.gz"}))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small site datasets, and the same cases pooled (what nnU-Net plans from)."""
    from radflow.synth import synthesize

    root = tmp_path_factory.mktemp("fingerprint")
    folders = {}
    for site, (seed, count, matrix) in SITES.items():
        cases = synthesize(root / "synth" / site, count, seed=seed, matrix=matrix)
        folders[site] = root / "sites" / site
        write_raw(folders[site], [(f"{site}_{c.name}", c.dicom_dir, c.labels_path) for c in cases])
    pooled = root / "raw" / POOLED
    for sub in ("imagesTr", "labelsTr"):
        (pooled / sub).mkdir(parents=True)
        for site in SITES:
            for file in (folders[site] / sub).iterdir():
                os.link(file, pooled / sub / file.name)
    cases = sum(c for _, c, _ in SITES.values())
    (pooled / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": cases,
        "file_ending": ".nii.gz"}))
    return folders | {"pooled": pooled, "root": root}


@pytest.fixture(scope="module")
def nnunet(data: dict[str, Path]) -> dict:
    """nnU-Net's own DatasetFingerprintExtractor and ExperimentPlanner on the pooled data."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    root = data["root"]
    with nnunet_folders(root / "raw", root / "preprocessed"):
        extractor = DatasetFingerprintExtractor(POOLED, 1)
        extractor.show_progress_bar = False
        cases = sum(c for _, c, _ in SITES.values())
        extractor.num_foreground_voxels_for_intensitystats = SAMPLES * cases
        fingerprint = extractor.run()
        plans = ExperimentPlanner(POOLED).plan_experiment()
    return json.loads(json.dumps({"fingerprint": fingerprint, "plans": plans}))


def half(width: float) -> float:
    """Half a bin: how far a value estimated from an unsuppressed bin can be off."""
    return width / 2 + 1e-9


def released(release: dict, policy: SitePolicy) -> dict:
    result = gate(release, release_schema(), policy, PARAMS.job())
    assert result.ok, (result.refusal, result.detail)
    return json.loads(json.dumps(result.released))  # as the hub receives it


def compare(fed: dict, pooled: dict, bounds: dict) -> tuple[list[str], str]:
    """What differs beyond the histogram resolution, and the whole comparison as text."""
    problems, lines = [], []
    fp = fed["foreground_intensity_properties_per_channel"]["0"]
    np_ = pooled["fingerprint"]["foreground_intensity_properties_per_channel"]["0"]
    for key in ("mean", "std"):
        lines.append(f"{key}: federated {fp[key]:.6f}, nnU-Net {np_[key]:.6f}")
        if not np.isclose(fp[key], np_[key], rtol=1e-5):
            problems.append(key)
    for key, bound in (("percentile_00_5", "percentile_00_5"), ("median", "median"),
                       ("percentile_99_5", "percentile_99_5")):
        b = bounds[bound]
        lines.append(f"{key}: federated {fp[key]} in [{b.low}, {b.high}], nnU-Net {np_[key]}")
        if not (b.low <= np_[key] <= b.high and abs(fp[key] - np_[key]) <= half(PARAMS.intensity_bin_width)):
            problems.append(key)
    return problems, "\n".join(lines)


def test_the_federated_plan_matches_nnunet_on_the_pooled_data(data, nnunet) -> None:
    """Three sites' releases (through a gate that suppresses nothing) merge into the plan
    nnU-Net makes from the pooled cases: normalization mean and sd exact, percentiles within a
    bin, the same target spacing and median shape within the histograms' resolution."""
    policy = SitePolicy(min_cohort=1, min_cell=1)
    releases = [released(site_fingerprint(data[s], PARAMS), policy) for s in SITES]
    plan = federated_plan(releases, PARAMS, LABELS)
    bounds = merge_fingerprints(releases, PARAMS).bounds
    problems, report = compare(plan.plans, nnunet, bounds)
    fed, ref = plan.plans["configurations"]["3d_fullres"], nnunet["plans"]["configurations"]["3d_fullres"]
    report += (f"\ntarget spacing: federated {fed['spacing']}, nnU-Net {ref['spacing']}"
               f"\nmedian shape: federated {fed['median_image_size_in_voxels']}, nnU-Net "
               f"{ref['median_image_size_in_voxels']}\ntranspose: federated "
               f"{plan.plans['transpose_forward']}, nnU-Net {nnunet['plans']['transpose_forward']}"
               f"\noriginal median shape: federated "
               f"{plan.plans['original_median_shape_after_transp']}, nnU-Net "
               f"{nnunet['plans']['original_median_shape_after_transp']}")
    assert not problems, f"beyond tolerance: {problems}\n{report}"
    assert plan.plans["transpose_forward"] == nnunet["plans"]["transpose_forward"], report
    for f, r in zip(fed["spacing"], ref["spacing"], strict=True):
        assert abs(f - r) <= half(PARAMS.spacing_bin_width), report
    for axis, (f, r) in enumerate(zip(fed["median_image_size_in_voxels"],
                                      ref["median_image_size_in_voxels"], strict=True)):
        tolerance = half(PARAMS.extent_bin_width) / fed["spacing"][axis] + 1
        assert abs(f - r) <= tolerance, report
    for f, r in zip(plan.plans["original_median_shape_after_transp"],
                    nnunet["plans"]["original_median_shape_after_transp"], strict=True):
        assert abs(f - r) <= round(half(PARAMS.shape_bin_width) + 0.5), report
    assert fed["normalization_schemes"] == ref["normalization_schemes"] == ["CTNormalization"]
    # radflow's small recipe, and nothing but merged aggregates in what is published
    assert fed["patch_size"] == PATCH and fed["batch_size"] == 2
    assert fed["architecture"]["arch_kwargs"]["features_per_stage"] == SMALL_ARCH["features_per_stage"]
    assert list(plan.plans["configurations"]) == ["3d_fullres"]
    assert plan.dataset_json["numTraining"] == 10 and plan.dataset_json["labels"] == LABELS
    published = json.dumps([plan.plans, plan.dataset_json])
    assert "site" not in published.lower() and "case_" not in published


def test_a_release_passes_the_default_gate_and_the_merge_copes_with_suppressed_cells(
        data, nnunet) -> None:
    """With the default policy (cohort >= 10, cells < 5 suppressed), a 10-case site's release
    leaves with blanked bins; merged, the bounds still hold nnU-Net's values and the moments
    stay exact."""
    release = site_fingerprint(data["pooled"], PARAMS)
    result = gate(release, release_schema(), SitePolicy(), PARAMS.job())
    assert result.ok, (result.refusal, result.detail)
    assert any(s.startswith("spacing_axis") for s in result.suppressed), result.suppressed
    posted = json.loads(json.dumps(result.released))
    assert None in posted["spacing_axis1_histogram"]
    merged = merge_fingerprints([posted], PARAMS)
    bounds = merged.bounds
    problems, report = compare(merged.fingerprint, nnunet, bounds)
    assert merged.cases == 10
    assert not {"mean", "std"} & set(problems), report
    ref = nnunet["fingerprint"]
    for axis in range(3):
        b = bounds["spacing_median"][axis]
        median = float(np.median([s[axis] for s in ref["spacings"]]))
        assert b.low <= median <= b.high, f"axis {axis}: nnU-Net {median}, bound {b}"
    plan = federated_plan([posted], PARAMS, LABELS)  # a plan even from blanked bins
    assert plan.plans["configurations"]["3d_fullres"]["patch_size"] == PATCH


def test_per_case_spacings_or_shapes_cannot_leave(data) -> None:
    """The schema has no field for per-case values: the gate refuses a release that carries
    them, and a schema that declared one (an array as long as the cohort) is refused too."""
    release = site_fingerprint(data["a"], PARAMS) | {"n": 10}
    policy = SitePolicy(min_cell=1)
    smuggled = release | {"spacings": [[5.0, 0.8, 0.8]] * 10}
    assert gate(smuggled, release_schema(), policy, PARAMS.job()).refusal == \
        "policy_violation:schema"
    extended = round_schema()
    extended["fields"]["case_shapes"] = {"kind": "matrix", "shape": [10, 3]}
    schema = ReleaseSchema.model_validate({"rounds": {ROUND: extended}})
    with_shapes = release | {"case_shapes": [[40.0, 48.0, 48.0]] * 10}
    assert gate(with_shapes, schema, policy, PARAMS.job()).refusal == "policy_violation:per_case"
    assert gate(release, release_schema(), policy, PARAMS.job()).ok


def test_only_ct_is_planned(tmp_path: Path, data) -> None:
    """A non-CT dataset is refused at the site with the reason; the hub refuses a release
    that claims another modality, or whose histograms do not add up to its totals."""
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": LABELS, "numTraining": 1,
        "file_ending": ".nii.gz"}))
    with pytest.raises(ConfigurationError, match="CT"):
        site_fingerprint(tmp_path, PARAMS)
    release = site_fingerprint(data["b"], PARAMS)
    with pytest.raises(FederationError, match="free_text"):
        merge_fingerprints([release | {"modality": "MR"}], PARAMS)
    with pytest.raises(FederationError, match="add up"):  # a hub trusts no site's arithmetic
        merge_fingerprints([release | {"n": 4}], PARAMS)


def test_sites_preprocess_with_the_shared_plan(tmp_path: Path, data) -> None:
    """Two sites preprocess with the one plan: the same target spacing and normalization;
    a rerun replaces the output; a site whose labels differ is refused."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    policy = SitePolicy(min_cohort=1, min_cell=1)
    releases = [released(site_fingerprint(data[s], PARAMS), policy) for s in SITES]
    plan = federated_plan(releases, PARAMS, LABELS, patch=[32, 32, 32])
    target = plan.plans["configurations"]["3d_fullres"]["spacing"]
    for site in ("a", "c"):
        folder = preprocess_with_plan(data[site], plan.plans, plan.dataset_json,
                                      tmp_path / site, fingerprint=plan.fingerprint)
        assert folder.name == "nnUNetPlansRadflowSmall_3d_fullres"
        assert (folder.parent / "nnUNetPlansRadflowSmall.json").is_file()
        dataset = nnUNetDatasetBlosc2(str(folder))
        assert sorted(dataset.identifiers) == sorted(
            p.name.removesuffix(".nii.gz") for p in (data[site] / "labelsTr").iterdir())
        image, seg, _, props = dataset.load_case(dataset.identifiers[0])
        expected = [round(s * sp / t) for s, sp, t in zip(
            props["shape_after_cropping_and_before_resampling"],
            [props["spacing"][i] for i in plan.plans["transpose_forward"]], target, strict=True)]
        assert list(image.shape[1:]) == expected  # resampled to the shared target spacing
        assert abs(float(np.mean(image[0][seg[0] > 0]))) < 1.5  # the pooled normalization
    assert preprocess_with_plan(data["a"], plan.plans, plan.dataset_json, tmp_path / "a") == \
        tmp_path / "a" / "Dataset601_RadflowFederated" / "nnUNetPlansRadflowSmall_3d_fullres"
    other = plan.dataset_json | {"labels": {"background": 0, "liver": 1}}
    with pytest.raises(ConfigurationError, match="labels"):
        preprocess_with_plan(data["a"], plan.plans, other, tmp_path / "x")
    with pytest.raises(ConfigurationError, match="multiple"):
        federated_plan(releases, PARAMS, LABELS, patch=[30, 64, 64])


def test_order_statistics_are_bounded_through_suppressed_bins() -> None:
    """Every order statistic of values pooled over sites lies in its interval, with small bins
    blanked as the gate blanks them; where q * (n - 1) is exact, the interval is
    quantile_bounds'; the synthesized quantile points are within half a bin without
    suppression, and still inside the intervals with it."""
    from radflow.federation.egress import _suppress_histogram
    from radflow.federation.stats import histogram, order_statistic_bounds, quantile_bounds
    from radflow_nnunet.federated.plan import order_points

    rng = np.random.default_rng(7)
    edges = [float(e) for e in np.arange(0.0, 20.5, 0.5)]
    sites = [rng.normal(8 + i, 2 + i, size=size).clip(0, 20) for i, size in enumerate((9, 14, 30))]
    pooled = np.sort(np.concatenate(sites))
    n = pooled.size
    for min_cell in (1, 5):
        hists = [(_suppress_histogram(histogram(v, edges), min_cell)[0], v.size) for v in sites]
        assert (None in hists[0][0]) == (min_cell > 1)
        found = order_statistic_bounds(hists, edges, range(n))
        for rank, bound in enumerate(found):
            assert bound.low <= pooled[rank] <= bound.high, (min_cell, rank, bound)
        for rank in (0, 13, 26, n - 1):
            q = rank / (n - 1)
            if q * (n - 1) == rank:
                assert quantile_bounds(hists, edges, q) == found[rank]
        points = order_points(hists, edges, 11)
        truth = np.percentile(pooled, np.linspace(0, 100, 11))
        if min_cell == 1:
            assert np.all(np.abs(np.array(points) - truth) <= half(0.5)), (points, truth)
        assert all(found[0].low <= p <= found[-1].high for p in points)
    with pytest.raises(ValueError, match="rank"):
        order_statistic_bounds(hists, edges, [n])


def test_the_cases_are_listed_as_nnunet_lists_them_without_forking(data, monkeypatch) -> None:
    """nnU-Net's lister forks a pool (a fork of a flow run's threaded process hung); radflow's
    gives the same cases, and no pool is made."""
    import multiprocessing.pool

    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from radflow_nnunet.federated.fingerprint import raw_cases, read_dataset_json

    raw = data["pooled"]
    dataset_json = read_dataset_json(raw)
    theirs = get_filenames_of_train_images_and_targets(str(raw), dataset_json)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was made")

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", no_pool)
    ours = raw_cases(raw, dataset_json)
    assert ours == theirs and len(ours) == sum(c for _, c, _ in SITES.values())
