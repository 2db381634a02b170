"""Round 0 of federated nnU-Net training: a site's part of a federated nnU-Net fingerprint.

nnU-Net plans a model from a *fingerprint* of the training data (its
``DatasetFingerprintExtractor``): every case's spacing and shape after cropping to the nonzero
region, and statistics of foreground intensities. A site cannot release those per-case values,
so each site releases only what merges exactly or with a stated bound (``plan.py`` merges them
into one plan at the hub)::

    release = site_fingerprint(raw_dataset_folder, FingerprintParams())   # at the site
    gate(release, release_schema(), policy, FingerprintParams().job())    # what may leave

What a site releases (the round's release schema, :func:`round_schema`):

- ``n``: its number of training cases (the cohort size);
- ``modality``: ``CT`` (the only modality supported for now: its normalization uses fixed
  Hounsfield statistics; anything else is refused with a clear error);
- foreground intensities, sampled exactly as nnU-Net's fingerprint extractor samples them
  (per case ``samples_per_case`` draws with replacement from the voxels where label > 0, with
  nnU-Net's own seed): their exact mergeable moments (count, sum, centred sum of squares) and
  their histogram on edges the study fixes (``intensity_*``), from which the hub bounds the
  0.5 and 99.5 percentiles and the median;
- per image axis, histograms on shared edges of the cases' spacings, of their shapes after
  nnU-Net's crop to nonzero, and of their extents (shape x spacing, in mm: what the planner's
  median resampled shape is a function of). Never a per-case value: the schema has no field
  for one, so the gate refuses a release that carries one.

Axes are nnU-Net's array axes (for images read by SimpleITK: z, y, x). Every histogram clips
values outside the study's edges into its first or last bin (as radflow's histograms do); the
site logs how many it clipped, and the study should widen its edges if any were.
"""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from radflow.errors import ConfigurationError
from radflow.federation.release import ReleaseSchema
from radflow.federation.stats import Moments

log = logging.getLogger(__name__)

ROUND = "fingerprint"
AXES = (0, 1, 2)
GEOMETRY = ("spacing", "shape", "extent")  # the per-axis distributions a site releases
MODALITIES = ("CT",)


class FingerprintParams(BaseModel):
    """The job parameters of the fingerprint round: the study fixes every histogram's edges
    (``low + width * i`` for i in 0..bins) so that all sites bin alike, and nnU-Net's sample
    size per case. Each ``*_bins`` also sizes its release field (the gate resolves it)."""

    model_config = ConfigDict(extra="forbid")

    intensity_low: float = Field(-1024.0, description="first intensity edge (HU)")
    intensity_bin_width: float = Field(1.0, gt=0, description="intensity bin width (HU)")
    intensity_bins: int = Field(4096, ge=1, le=100_000, description="intensity bins "
                                "(default: -1024..3072 HU)")
    spacing_low: float = Field(0.0, ge=0, description="first spacing edge (mm)")
    spacing_bin_width: float = Field(0.05, gt=0, description="spacing bin width (mm)")
    spacing_bins: int = Field(400, ge=1, le=100_000, description="spacing bins (0..20 mm)")
    shape_low: float = Field(0.0, ge=0, description="first shape edge (voxels)")
    shape_bin_width: float = Field(2.0, gt=0, description="shape bin width (voxels)")
    shape_bins: int = Field(1024, ge=1, le=100_000, description="shape bins (0..2048 voxels)")
    extent_low: float = Field(0.0, ge=0, description="first extent edge (mm)")
    extent_bin_width: float = Field(2.0, gt=0, description="extent bin width (mm)")
    extent_bins: int = Field(1000, ge=1, le=100_000, description="extent bins (0..2000 mm)")
    samples_per_case: int = Field(10_000, ge=100, le=100_000_000, description=(
        "foreground voxels nnU-Net samples per case (with replacement). nnU-Net's own "
        "extractor takes 1e8 // (all cases); with that value the merged mean and sd are "
        "exactly the ones nnU-Net computes on the pooled data"))

    @classmethod
    def coerce(cls, params: FingerprintParams | dict[str, Any] | None) -> FingerprintParams:
        """Parameters from a job's parameter dict (``round`` and unknown keys of the flow's
        other rounds are ignored), or the defaults.

        Raises:
            ConfigurationError: a parameter has an invalid value.
        """
        if isinstance(params, cls):
            return params
        values = {k: v for k, v in (params or {}).items() if k in cls.model_fields}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigurationError(
                f"fingerprint parameter {'.'.join(map(str, first['loc']))}: {first['msg']}",
                fix="set it as the round's parameter schema describes "
                    "(FingerprintParams in radflow_nnunet.federated.fingerprint)") from exc

    def edges(self, kind: str) -> list[float]:
        """The shared bin edges of ``kind`` (intensity, spacing, shape or extent)."""
        low = getattr(self, f"{kind}_low")
        width = getattr(self, f"{kind}_bin_width")
        bins = getattr(self, f"{kind}_bins")
        return [float(f"{low + width * i:.12g}") for i in range(bins + 1)]

    def job(self) -> dict[str, Any]:
        """The job parameters of the round (they name the round and size the histograms)."""
        return {"round": ROUND, **self.model_dump()}


def histogram_field(kind: str, axis: int | None = None) -> str:
    """The release field of one histogram: ``fg_histogram`` or e.g. ``spacing_axis0_histogram``."""
    return "fg_histogram" if axis is None else f"{kind}_axis{axis}_histogram"


def round_schema() -> dict[str, Any]:
    """The fingerprint round's release schema, as the flow's ``radflow-flow.yaml`` declares it
    (``release_schema: {rounds: {fingerprint: <this>}}``)."""
    fields: dict[str, Any] = {
        "n": {"kind": "count", "description": "training cases at the site"},
        "modality": {"kind": "enum", "values": list(MODALITIES),
                     "description": "the images' modality (CT only for now)"},
        "fg_count": {"kind": "count", "small": "refuse", "description": (
            "foreground intensities sampled (nnU-Net's draws: samples_per_case per case with "
            "foreground); the sums below would reveal a small one: under min_cell, refused")},
        "fg_sum": {"kind": "sum", "description": "sum of the sampled foreground intensities"},
        "fg_m2": {"kind": "sum", "description": "their centred sum of squares"},
        "fg_histogram": {"kind": "histogram", "shape": ["intensity_bins"], "description": (
            "their histogram on the study's intensity edges (percentile bounds)")},
    }
    units = {"spacing": "mm", "shape": "voxels after nnU-Net's crop to nonzero",
             "extent": "mm, shape x spacing"}
    for kind in GEOMETRY:
        for axis in AXES:
            fields[histogram_field(kind, axis)] = {
                "kind": "histogram", "shape": [f"{kind}_bins"],
                "description": f"cases by {kind} along array axis {axis} ({units[kind]}), on "
                               f"the study's {kind} edges"}
    return {"cohort_field": "n", "fields": fields}


def release_schema() -> ReleaseSchema:
    """The release schema of a flow whose round ``fingerprint`` is this one (what the gate
    and the hub check a release against)."""
    return ReleaseSchema.model_validate({"rounds": {ROUND: round_schema()}})


def read_dataset_json(raw_folder: Path) -> dict[str, Any]:
    """A raw dataset folder's ``dataset.json``, checked to be a CT dataset.

    Raises:
        ConfigurationError: no readable dataset.json, or its channels are not one CT channel.
    """
    path = Path(raw_folder) / "dataset.json"
    try:
        dataset_json = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is missing or not JSON ({exc})",
                                 fix="give the folder of an nnU-Net raw dataset (imagesTr, "
                                     "labelsTr, dataset.json)") from exc
    check_modality(dataset_json, path)
    return dataset_json


def check_modality(dataset_json: dict[str, Any], where: Any = "dataset.json") -> None:
    """Refuse anything but one CT channel (the federated plan's normalization is nnU-Net's
    CTNormalization, fixed by the pooled foreground statistics).

    Raises:
        ConfigurationError: the channels are not exactly one CT channel.
    """
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or [str(v).upper() for v in channels.values()] != ["CT"]:
        raise ConfigurationError(
            f"{where}: channels {channels!r}; the federated nnU-Net fingerprint supports "
            "exactly one CT channel for now",
            fix="train on CT series only (channel_names {\"0\": \"CT\"})")


def raw_cases(raw: Path, dataset_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The training cases of an nnU-Net raw dataset, as nnU-Net lists them ({case: {"images":
    [one file per channel], "label": file}}), without its lister: that one forks a pool of 12
    processes, and a fork of a flow run's process (Prefect's threads holding their locks) can
    hang for ever (seen: a site part that never ended, in the fingerprint and training rounds)."""
    ending = dataset_json.get("file_ending", ".nii.gz")
    channels = len(dataset_json.get("channel_names") or {"0": "CT"})
    suffix = f"_0000{ending}"
    cases = sorted(p.name[:-len(suffix)] for p in (raw / "imagesTr").glob(f"*{suffix}"))
    return {case: {"images": [str(raw / "imagesTr" / f"{case}_{c:04d}{ending}")
                              for c in range(channels)],
                   "label": str(raw / "labelsTr" / f"{case}{ending}")} for case in cases}


def site_fingerprint(raw_folder: str | Path,
                     params: FingerprintParams | dict[str, Any] | None = None) -> dict[str, Any]:
    """A site's release of the fingerprint round, computed with nnU-Net's own per-case
    analysis (``DatasetFingerprintExtractor.analyze_case``: read, crop to nonzero, sample the
    foreground) on every training case of an nnU-Net raw dataset folder.

    Args:
        raw_folder: imagesTr/, labelsTr/ and dataset.json (one CT channel).
        params: the round's job parameters (a dict is coerced; None: the defaults).

    Returns:
        The release (before the gate): the fields of :func:`round_schema`.

    Raises:
        ConfigurationError: not a CT dataset, no cases, a missing file, or no foreground in
            any label (labels that mark nothing cannot plan a segmentation model).
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    params = FingerprintParams.coerce(params)
    raw = Path(raw_folder)
    dataset_json = read_dataset_json(raw)
    dataset = raw_cases(raw, dataset_json)
    if not dataset:
        raise ConfigurationError(f"{raw} holds no training cases",
                                 fix="build the site's raw dataset first (imagesTr, labelsTr)")
    for case in dataset.values():
        for file in [*case["images"], case["label"]]:
            if not Path(file).is_file():
                raise ConfigurationError(f"{raw}: {file} is missing",
                                         fix="rebuild the site's raw dataset folder")
    first = next(iter(dataset.values()))["images"][0]
    with redirect_stdout(io.StringIO()):  # nnU-Net prints the reader it picked
        reader = determine_reader_writer_from_dataset_json(dataset_json, first)
    geometry: dict[str, list[np.ndarray]] = {kind: [] for kind in GEOMETRY}
    samples = []
    for key in sorted(dataset):
        shape, spacing, intensities, _stats, _relative = DatasetFingerprintExtractor.analyze_case(
            dataset[key]["images"], dataset[key]["label"], reader, params.samples_per_case)
        geometry["shape"].append(np.asarray(shape, dtype=float))
        geometry["spacing"].append(np.asarray(spacing, dtype=float))
        geometry["extent"].append(geometry["shape"][-1] * geometry["spacing"][-1])
        samples.append(np.asarray(intensities[0], dtype=np.float64))
    values = np.concatenate(samples)
    if values.size == 0:
        raise ConfigurationError(f"{raw}: no label marks any voxel (label > 0) in any case",
                                 fix="check the site's labels (reviewed SEGs) before round 0")
    moments = _moments(values)
    release: dict[str, Any] = {"n": len(dataset), "modality": "CT", "fg_count": moments.n,
                               "fg_sum": moments.sum, "fg_m2": moments.m2}
    clipped: dict[str, int] = {}
    release["fg_histogram"], clipped["intensity"] = _counts(values, params.edges("intensity"))
    for kind in GEOMETRY:
        table = np.vstack(geometry[kind])
        for axis in AXES:
            counts, outside = _counts(table[:, axis], params.edges(kind))
            release[histogram_field(kind, axis)] = counts
            clipped[f"{kind} axis {axis}"] = outside
    if any(clipped.values()):
        log.warning("fingerprint: values outside the study's edges, counted in the end bins: "
                    "%s (the study should widen those edges)",
                    {k: v for k, v in clipped.items() if v})
    return release


def _moments(x: np.ndarray) -> Moments:
    """radflow.federation.stats.moments on an array (two passes, float64), without its list
    conversion (nnU-Net's exact sample can hold 1e8 values)."""
    mean = float(x.mean())
    return Moments(int(x.size), float(x.sum()), float(((x - mean) ** 2).sum()))


def _counts(x: np.ndarray, edges: list[float]) -> tuple[list[int], int]:
    """radflow.federation.stats.histogram on an array (values outside the edges go to the end
    bins; the last bin is closed), and how many were outside."""
    bounds = np.asarray(edges, dtype=float)
    outside = int(np.count_nonzero((x < bounds[0]) | (x > bounds[-1])))
    counts, _ = np.histogram(np.clip(x, bounds[0], bounds[-1]), bins=bounds)
    return [int(c) for c in counts], outside
