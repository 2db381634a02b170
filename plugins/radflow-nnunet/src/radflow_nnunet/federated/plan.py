"""The hub's part of round 0: the sites' fingerprint releases -> ONE nnU-Net plan for the study.

    plan = federated_plan(releases, params, labels)      # at the hub, published with the study
    plan.plans, plan.dataset_json                         # plans.json, dataset.json content
    folder = preprocess_with_plan(raw, plan.plans, plan.dataset_json, work)   # at every site

The plan is nnU-Net's own: its ``ExperimentPlanner`` runs on a fingerprint synthesized from the
merged releases, then radflow's small-network recipe (``training.py``: SMALL_ARCH, PATCH, batch
size 2; study parameters with those defaults) replaces the architecture, patch and batch size,
as the demo model's recipe does. The published plan holds the merged aggregates only.

What is exact and what is approximated (N: all sites' cases; "bin": the study's bin width):

- foreground mean and sd: exact (merged moments of nnU-Net's own per-case samples; sd is the
  population sd, as nnU-Net's ``np.std``). With ``samples_per_case = 1e8 // N`` they equal the
  ones nnU-Net computes on the pooled data, up to float summation order.
- 0.5 / 50 / 99.5 percentiles: numpy's linear interpolation between the two order statistics
  around the percentile, each estimated by the middle of the interval that surely holds it
  (``radflow.federation.stats.order_statistic_bounds``): off by at most half a bin, more where
  the sites' gates suppressed small bins (then by at most half of the widened interval; the
  guaranteed intervals are in ``FederatedPlan.bounds``). ``min`` and ``max`` (which nnU-Net
  records but neither the planner nor CT normalization uses) are the lower bound of the 0.5
  percentile and the upper bound of the 99.5 percentile: no release holds an extreme value.
- spacings and shapes: the planner reads per-case lists, but uses only per-axis medians and
  10th percentiles of them (and of shape x spacing / target spacing). The synthesized lists hold
  min(N, 101) equally spaced quantile points per axis (for N <= 101 the order statistics
  themselves), estimated as above: numpy's median and 10th percentile of these lists are the
  same interpolations of the same order statistics as on the pooled per-case lists, so the
  target spacing is within half a spacing bin of nnU-Net's. A case's shape is rebuilt as
  extent / spacing from rank-paired points of the released extents (shape x spacing) and
  spacings, so the planner's median resampled shape is round(median extent / target spacing)
  per axis: within half an extent bin / target spacing + 1 voxel of nnU-Net's. The per-case
  pairing of spacing and shape is not released; the one place the planner uses plain shapes
  (its anisotropy test, for data with one axis over 3x coarser than the others) then sees the
  median of extent / spacing instead of the median shape. ``original_median_shape_after_transp``
  (informational) is set from the shape histograms' medians (within half a shape bin).
- ``median_relative_size_after_cropping`` is set to 1.0: for CT the planner ignores it (CT
  normalization never uses the nonzero mask).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError, FederationError
from radflow.federation.stats import (
    Moments,
    merge_moments,
    order_statistic_bounds,
    quantile_bounds,
)
from radflow.federation.structure import Refused, check_release
from radflow_nnunet.federated.fingerprint import (
    AXES,
    GEOMETRY,
    FingerprintParams,
    check_modality,
    histogram_field,
    raw_cases,
    read_dataset_json,
    release_schema,
)
from radflow_nnunet.training import CONFIGURATION, PATCH, PLANS, SMALL_ARCH

log = logging.getLogger(__name__)

DATASET_NAME = "Dataset601_RadflowFederated"
BATCH_SIZE = 2  # training.py's recipe
REPRESENTATIVE_POINTS = 101  # quantile points per axis in the synthesized fingerprint
READER = "SimpleITKIO"  # nnU-Net's reader for .nii.gz (what every site's raw dataset holds)


@dataclass(frozen=True)
class FederatedPlan:
    """One plan for the study: ``plans`` (plans.json) and ``dataset_json`` (dataset.json),
    the ``fingerprint`` the planner ran on (dataset_fingerprint.json: merged aggregates only)
    and the ``bounds`` the approximated values were taken from (for the study's report)."""

    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    fingerprint: dict[str, Any]
    cases: int
    bounds: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergedFingerprint:
    """The sites' fingerprints merged: ``fingerprint`` (an nnU-Net dataset_fingerprint.json),
    the number of ``cases``, the median shape per axis (from the shape histograms) and the
    guaranteed ``bounds`` behind each approximated value."""

    fingerprint: dict[str, Any]
    cases: int
    median_shape: list[float]
    bounds: dict[str, Any]


def merge_fingerprints(releases: Sequence[dict[str, Any]],
                       params: FingerprintParams | dict[str, Any] | None = None
                       ) -> MergedFingerprint:
    """The sites' released fingerprints (as posted: suppressed cells are None) merged into
    the content of an nnU-Net ``dataset_fingerprint.json``.

    Raises:
        FederationError: no release, or one that does not match the round's release schema.
    """
    params = FingerprintParams.coerce(params)
    if not releases:
        raise FederationError("no fingerprint release to merge",
                              fix="wait for the sites' round-0 releases (the study's quorum)")
    schema, job = release_schema(), params.job()
    for index, release in enumerate(releases):
        try:
            check_release(release, schema, job, released=True)
        except Refused as exc:
            raise FederationError(f"fingerprint release {index} does not match the round's "
                                  f"schema: {exc.reason()}",
                                  fix="the site must run the study's flow version") from None
        _check_totals(index, release)
    cases = sum(r["n"] for r in releases)
    pooled = merge_moments(Moments(r["fg_count"], r["fg_sum"], r["fg_m2"]) for r in releases)
    intensity = [(r["fg_histogram"], r["fg_count"]) for r in releases]
    edges = params.edges("intensity")
    low, median, high = (quantile_bounds(intensity, edges, q) for q in (0.005, 0.5, 0.995))
    properties = {"mean": pooled.mean, "median": quantile_estimate(intensity, edges, 0.5),
                  "std": math.sqrt(pooled.m2 / pooled.n),  # nnU-Net's np.std: population
                  "min": low.low, "max": high.high,
                  "percentile_99_5": quantile_estimate(intensity, edges, 0.995),
                  "percentile_00_5": quantile_estimate(intensity, edges, 0.005)}
    bounds: dict[str, Any] = {"percentile_00_5": low, "median": median, "percentile_99_5": high}
    count = min(cases, REPRESENTATIVE_POINTS)
    points: dict[str, list[list[float]]] = {}
    median_shape = []
    for kind in GEOMETRY:
        points[kind] = []
        for axis in AXES:
            hists = [(r[histogram_field(kind, axis)], r["n"]) for r in releases]
            points[kind].append(order_points(hists, params.edges(kind), count))
            bounds[f"{kind}_median"] = [*bounds.get(f"{kind}_median", []),
                                        quantile_bounds(hists, params.edges(kind), 0.5)]
            if kind == "shape":
                median_shape.append(quantile_estimate(hists, params.edges(kind), 0.5))
    spacings = [[points["spacing"][a][i] for a in AXES] for i in range(count)]
    shapes = [[points["extent"][a][i] / points["spacing"][a][i] for a in AXES]
              for i in range(count)]
    fingerprint = {"spacings": spacings, "shapes_after_crop": shapes,
                   "foreground_intensity_properties_per_channel": {"0": properties},
                   "median_relative_size_after_cropping": 1.0}
    return MergedFingerprint(fingerprint, cases, median_shape, bounds)


def _check_totals(index: int, release: dict[str, Any]) -> None:
    """Each histogram holds its release's total (``n`` cases, ``fg_count`` samples): all of it
    where nothing was suppressed, at most it (and at least one per blank) otherwise."""
    for name, value in release.items():
        if not name.endswith("histogram"):
            continue
        total = release["fg_count"] if name == "fg_histogram" else release["n"]
        known = sum(c for c in value if c is not None)
        blanks = sum(1 for c in value if c is None)
        if known + blanks > total or (blanks == 0 and known != total):
            raise FederationError(f"fingerprint release {index}: {name} does not add up to its "
                                  "release's total", fix="the site must run the study's flow "
                                  "version (its histograms count every case once)")


def order_points(histograms: Sequence[tuple[Sequence[int | None], int]],
                 edges: Sequence[float], count: int) -> list[float]:
    """``count`` equally spaced quantile points (q = i / (count - 1)) of the pooled values, as
    numpy's linear interpolation between order statistics gives them, each order statistic
    estimated by the middle of the interval that surely holds it: with ``count`` equal to the
    number of values, the order statistics themselves."""
    n = sum(total for _, total in histograms)
    if count == 1:
        return [quantile_estimate(histograms, edges, 0.5)]
    positions = [divmod(i * (n - 1), count - 1) for i in range(count)]  # exact: rank, rest
    ranks = sorted({r for r, _ in positions} | {min(r + 1, n - 1) for r, _ in positions})
    middle = {r: b.estimate for r, b in zip(ranks, order_statistic_bounds(
        histograms, edges, ranks), strict=True)}
    return [middle[r] + (middle[min(r + 1, n - 1)] - middle[r]) * rest / (count - 1)
            for r, rest in positions]


def quantile_estimate(histograms: Sequence[tuple[Sequence[int | None], int]],
                      edges: Sequence[float], q: float) -> float:
    """The pooled ``q`` quantile as numpy computes it (linear interpolation between the order
    statistics around q * (n - 1)), each order statistic estimated by the middle of the
    interval that surely holds it: off by at most half a bin where no bin was suppressed."""
    n = sum(total for _, total in histograms)
    position = q * (n - 1)
    rank = math.floor(position)
    below, above = order_statistic_bounds(histograms, edges, [rank, min(rank + 1, n - 1)])
    return below.estimate + (above.estimate - below.estimate) * (position - rank)


def federated_plan(releases: Sequence[dict[str, Any]],
                   params: FingerprintParams | dict[str, Any] | None,
                   labels: dict[str, int], *, patch: Sequence[int] = tuple(PATCH),
                   arch: dict[str, Any] | None = None, batch_size: int = BATCH_SIZE,
                   dataset_name: str = DATASET_NAME, plans_name: str = PLANS,
                   file_ending: str = ".nii.gz") -> FederatedPlan:
    """Merge the sites' fingerprint releases and plan ONE nnU-Net model for the study.

    Args:
        releases: the sites' released fingerprints (after their gates).
        params: the round's job parameters (the shared edges).
        labels: the study's label map (``{"background": 0, "liver": 1, ...}``).
        patch, arch, batch_size: radflow's small-network recipe (study parameters; defaults
            from training.py: PATCH, SMALL_ARCH, 2).
        dataset_name, plans_name: nnU-Net names of the study's dataset and plans.
        file_ending: the sites' raw image files.

    Raises:
        FederationError: a release does not match the round's schema.
        ConfigurationError: labels, patch or architecture are inconsistent.
    """
    merged = merge_fingerprints(releases, params)
    if labels.get("background") != 0 or len(set(labels.values())) != len(labels):
        raise ConfigurationError(f"labels {labels!r}: background must be 0 and ids distinct",
                                 fix='e.g. {"background": 0, "liver": 1, "spleen": 2}')
    dataset_json = {"channel_names": {"0": "CT"}, "labels": dict(labels),
                    "numTraining": merged.cases,
                    "file_ending": file_ending, "name": dataset_name}
    plans = plan_from_fingerprint(merged.fingerprint, dataset_json, dataset_name)
    plans["original_median_shape_after_transp"] = [
        round(merged.median_shape[a]) for a in plans["transpose_forward"]]
    plans = small_plan(plans, patch=patch, arch=arch or SMALL_ARCH, batch_size=batch_size,
                       plans_name=plans_name)
    return FederatedPlan(plans, dataset_json, merged.fingerprint, merged.cases, merged.bounds)


def plan_from_fingerprint(fingerprint: dict[str, Any], dataset_json: dict[str, Any],
                          dataset_name: str = DATASET_NAME) -> dict[str, Any]:
    """nnU-Net's ExperimentPlanner (default_experiment_planner) on a fingerprint, in a scratch
    folder: it needs no image (the reader is named, not detected from a file)."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    with tempfile.TemporaryDirectory(prefix="radflow-plan-") as tmp:
        raw, preprocessed = Path(tmp, "raw"), Path(tmp, "preprocessed")
        for folder in (raw / dataset_name, preprocessed / dataset_name):
            folder.mkdir(parents=True)
        ending = dataset_json["file_ending"]
        planner_json = dataset_json | {"overwrite_image_reader_writer": READER, "dataset": {
            "planned": {"images": [f"planned_0000{ending}"], "label": f"planned{ending}"}}}
        (raw / dataset_name / "dataset.json").write_text(json.dumps(planner_json))
        (preprocessed / dataset_name / "dataset_fingerprint.json").write_text(
            json.dumps(fingerprint))
        chatter = io.StringIO()
        with nnunet_folders(raw, preprocessed), redirect_stdout(chatter):
            plans = ExperimentPlanner(dataset_name).plan_experiment()
        log.debug("nnU-Net planner: %s", chatter.getvalue())
    return json.loads(json.dumps(plans))


def small_plan(plans: dict[str, Any], *, patch: Sequence[int] = tuple(PATCH),
               arch: dict[str, Any] | None = None, batch_size: int = BATCH_SIZE,
               plans_name: str = PLANS) -> dict[str, Any]:
    """radflow's small-network recipe (training.py) applied to a plan: only 3d_fullres, with
    the given architecture, patch and batch size.

    Raises:
        ConfigurationError: no 3d_fullres configuration, or a patch the architecture's
            strides do not divide.
    """
    arch = dict(arch or SMALL_ARCH)
    plans = json.loads(json.dumps(plans))
    config = plans["configurations"].get(CONFIGURATION)
    if config is None:
        raise ConfigurationError(f"nnU-Net planned no {CONFIGURATION} configuration (the "
                                 "median image has one slice: 2D data)",
                                 fix="federated training supports 3D CT series only")
    _check_recipe(list(patch), arch, batch_size)
    plans["plans_name"] = plans_name
    config["patch_size"] = list(patch)
    config["batch_size"] = batch_size
    config["data_identifier"] = f"{plans_name}_{CONFIGURATION}"
    config["architecture"]["arch_kwargs"].update(arch)
    plans["configurations"] = {CONFIGURATION: config}
    return plans


def _check_recipe(patch: list[int], arch: dict[str, Any], batch_size: int) -> None:
    stages = arch.get("n_stages")
    lists = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage")
    if not isinstance(stages, int) or any(len(arch.get(k, [])) != stages for k in lists):
        raise ConfigurationError(f"architecture {arch!r}: {', '.join(lists)} need n_stages "
                                 "entries", fix="start from radflow_nnunet.training.SMALL_ARCH")
    if len(patch) != 3 or any(not isinstance(p, int) or p < 1 for p in patch):
        raise ConfigurationError(f"patch {patch!r} is not three positive integers",
                                 fix="e.g. [32, 64, 64]")
    for axis, size in enumerate(patch):
        factor = math.prod(stride[axis] for stride in arch["strides"])
        if size % factor:
            raise ConfigurationError(f"patch {patch}: axis {axis} ({size}) is not a multiple "
                                     f"of the architecture's downsampling there ({factor})",
                                     fix=f"use a multiple of {factor}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch size {batch_size!r}", fix="a positive integer, e.g. 2")


@contextmanager
def environment(values: dict[str, Any]) -> Iterator[None]:
    """Environment variables set for the duration of a call, and restored (nnU-Net reads its
    folders from the environment; not thread-safe: the environment is the process's)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({name: str(value) for name, value in values.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def nnunet_folders(raw: Path, preprocessed: Path) -> Any:
    """nnU-Net's folders for the duration of a call. nnunetv2 2.8 reads them from the
    environment at each use (``nnunetv2.paths._EnvPath``), so setting and restoring the
    variables isolates the call."""
    return environment({"nnUNet_raw": raw, "nnUNet_preprocessed": preprocessed})


def preprocess_with_plan(raw_dataset_folder: str | Path, plans: dict[str, Any],
                         dataset_json: dict[str, Any], work: str | Path, *,
                         fingerprint: dict[str, Any] | None = None,
                         configuration: str = CONFIGURATION) -> Path:
    """Preprocess a site's raw dataset with the study's SHARED plan (nnU-Net's
    DefaultPreprocessor, case by case in this process), so that every site resamples and
    normalizes identically.

    Writes nnU-Net's preprocessed layout: ``work/<dataset_name>/<plans_name>.json``,
    ``dataset.json`` (the shared ones), ``dataset_fingerprint.json`` (when given: nnU-Net's
    trainer copies it into its output) and ``<data_identifier>/`` with the cases. A rerun
    replaces the cases folder. ``work`` is thus an ``nnUNet_preprocessed`` folder: nnU-Net's
    trainer (RadflowTrainer) trains on it with that variable pointing there.

    Returns:
        The folder of the preprocessed cases (``work/<dataset_name>/<data_identifier>``).

    Raises:
        ConfigurationError: not a CT dataset, labels that differ from the shared ones, or a
            configuration the plan does not have.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw = Path(raw_dataset_folder)
    site_json = read_dataset_json(raw)
    check_modality(dataset_json, "the study's dataset.json")
    if site_json.get("labels") != dataset_json.get("labels"):
        raise ConfigurationError(
            f"{raw / 'dataset.json'}: labels {site_json.get('labels')!r} differ from the "
            f"study's {dataset_json.get('labels')!r}",
            fix="build the site's raw dataset with the study's label map")
    if configuration not in plans.get("configurations", {}):
        raise ConfigurationError(f"the plan has no configuration {configuration!r}",
                                 fix=f"one of {sorted(plans.get('configurations', {}))}")
    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    base = Path(work) / manager.dataset_name
    out = base / config.data_identifier
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (base / f"{manager.plans_name}.json").write_text(json.dumps(plans, indent=2))
    (base / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    if fingerprint is not None:
        (base / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    dataset = raw_cases(raw, site_json)  # (not nnU-Net's lister: it forks)
    preprocessor = DefaultPreprocessor(verbose=False)
    for key in sorted(dataset):
        preprocessor.run_case_save(str(out / key), dataset[key]["images"], dataset[key]["label"],
                                   manager, config, dataset_json)
    return out
