"""A site's training set for federated nnU-Net: its reviewed SEGs as labels, a seeded split.

    from radflow_nnunet.federated.labels import build_training_set

    built = build_training_set(site, cohort, {"background": 0, "liver": 1, "spleen": 2,
                                              "kidney": 3},
                               out=work / "raw" / "Dataset601_Federated", study="s-42",
                               seed=7, held_out_fraction=0.2)
    built.train, built.held_out, built.skipped

Labels are the cohort's series whose *current* SEG (the one rule of
:mod:`radflow.results.current`) is accepted or a correction; nothing else (a draft, a rejected
SEG, a series without a SEG, is not a label). Where a series has such SEGs in several lines (the
model's reviewed SEG and an imported ground truth, say), the rule's own order picks one: a
correction, then accepted, then the newest.

Each label is read from Orthanc as DICOM (the SEG and its image series, never the catalog's
cache): the image volume exactly as inference reads it (:func:`radflow.imaging.load_volume`),
the label volume on its grid (:mod:`radflow_nnunet.federated.labels_seg`). A case whose image or
SEG cannot be read or does not fit is skipped with its reason (recorded), not a crash.

The nnU-Net raw dataset (``out``): ``imagesTr/``, ``labelsTr/`` (training cases), ``imagesTs/``,
``labelsTs/`` (held-out cases, for the validation round) and ``dataset.json`` (``numTraining``
counts the training cases). Files are named by pseudonymous case ids; nothing in a name or in
``dataset.json`` identifies a patient or a series. The split is recorded at the site
(:mod:`radflow_nnunet.federated.labels_split`).
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult
from radflow.cohorts import CohortDefinition, select_series
from radflow.enums import ResultKind
from radflow.errors import ConfigurationError, DicomInputError, OrthancError
from radflow.results.current import ACCEPTED, CORRECTION, current, rank_of
from radflow.types import SeriesRef
from radflow_nnunet.federated.labels_seg import label_volume
from radflow_nnunet.federated.labels_split import (
    case_id,
    case_id_key,
    check_fraction,
    split_cases,
    split_record_path,
    write_split_record,
)

FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
LABEL_RANKS = (CORRECTION, ACCEPTED)  # of the current rule's ranks: what makes a label


@dataclass(frozen=True)
class SkippedCase:
    """A labelled case left out of the training set, and why."""

    case_id: str
    reason: str


@dataclass
class TrainingSet:
    """A site's training set (case ids are pseudonyms; series UIDs stay in the site's record).

    Attributes:
        train: case ids in ``imagesTr``/``labelsTr``.
        held_out: case ids in ``imagesTs``/``labelsTs``.
        skipped: labelled cases that could not be used, with the reason.
        labels: the nnU-Net labels map (``dataset.json``'s ``labels``).
        unlabelled: cohort series without a label (no current SEG that is accepted or a
            correction).
        notes: per case id, what was noticed reading its SEG (a missing or an extra segment).
        dataset: the nnU-Net raw dataset folder.
        record: the split's record at the site.
    """

    train: list[str]
    held_out: list[str]
    skipped: list[SkippedCase]
    labels: dict[str, int]
    unlabelled: int = 0
    notes: dict[str, list[str]] = field(default_factory=dict)
    dataset: Path | None = None
    record: Path | None = None


@dataclass(frozen=True)
class SiteData:
    """What the training set reads and writes at a site."""

    orthanc: Any
    catalog_url: str
    folder: Path  # the site's folder (RADFLOW_HOME/sites/NAME)


def site_data(site: Any) -> SiteData:
    """A site handle (:class:`radflow.site.components.SiteContext`), a flow run's
    :class:`radflow.runtime.SiteRuntime`, or a site's name."""
    if isinstance(site, SiteData):
        return site
    if hasattr(site, "paths") and hasattr(site, "orthanc_client"):  # SiteContext
        return SiteData(site.orthanc_client(), site.catalog_url, site.paths.root)
    from radflow.runtime import SiteRuntime, site_runtime
    from radflow.settings import RadflowSettings
    from radflow.site.config import SitePaths

    runtime = site if isinstance(site, SiteRuntime) else site_runtime(site)
    return SiteData(runtime.orthanc, runtime.catalog_url,
                    SitePaths(RadflowSettings().home, runtime.name).root)


def check_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """The labels map, checked: ids 0..n-1 once each, ``background`` 0.

    Raises:
        ConfigurationError: it is not such a map.
    """
    out = {str(k): int(v) for k, v in labels.items()}
    if out.get("background") != 0 or sorted(out.values()) != list(range(len(out))):
        raise ConfigurationError(f"labels {out} is not an nnU-Net labels map",
                                 fix='e.g. {"background": 0, "liver": 1, "spleen": 2}')
    return out


def label_results(session: Any, series_uids: list[str]) -> dict[str, DerivedResult]:
    """Per series, its label: the current SEG that is accepted or a correction (the best by
    the current rule's order when several lines have one)."""
    rows = list(session.exec(select(DerivedResult).where(
        col(DerivedResult.source_series_uid).in_(series_uids))))
    by_id = {r.id: r for r in rows}
    chosen: dict[str, DerivedResult] = {}
    for (series, kind, _line, _segment), row in current(rows).items():
        if kind != ResultKind.SEG.value or rank_of(row, by_id)[0] not in LABEL_RANKS:
            continue
        best = chosen.get(series)  # several lines with a label: the rule's order
        if best is None or rank_of(row, by_id) < rank_of(best, by_id):
            chosen[series] = row
    return chosen


def read_seg(orthanc: Any, instance_id: str | None) -> Any:
    """The SEG of a result, read from Orthanc (as DICOM).

    Raises:
        DicomInputError: Orthanc does not hold it, or it is not a DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not instance_id:
        raise DicomInputError("the SEG's result names no object in Orthanc",
                              fix="re-import the case's SEG")
    try:
        data = orthanc.instance_file(instance_id)
    except OrthancError as exc:
        raise DicomInputError("the SEG is not in the site's Orthanc (deleted?)",
                              fix="re-import the case's SEG") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise DicomInputError(f"the SEG cannot be parsed: {exc}",
                              fix="re-import the case's SEG") from exc


def build_training_set(site: Any, cohort: CohortDefinition | dict[str, Any] | str,
                       labels: Mapping[str, int], out: Path, *, study: str, seed: int = 0,
                       held_out_fraction: float = 0.2, modality: str = "CT") -> TrainingSet:
    """Select a cohort's labelled series, write them as an nnU-Net raw dataset split into
    training and held-out cases, and record the split at the site.

    Args:
        site: the site (:func:`site_data`).
        cohort: the cohort definition (as the CLI and ``--cohort FILE`` take it).
        labels: the nnU-Net labels map, name -> id.
        out: the dataset folder (``.../DatasetNNN_Name``); what it held of a previous run's
            cases is replaced.
        study: the study's name (its split is recorded under it).
        seed: the split's seed (a study parameter).
        held_out_fraction: the share of cases held out for validation, in [0, 1).
        modality: the images' modality (the dataset's one channel); a series of another
            modality is skipped.

    Returns:
        The case ids of each side, the skipped cases with their reasons, the labels map.

    Raises:
        ConfigurationError: a bad labels map, fraction or study name.
    """
    labels = check_labels(labels)
    check_fraction(held_out_fraction)
    data = site_data(site)
    record_path = split_record_path(data.folder, study)
    definition = cohort if isinstance(cohort, CohortDefinition) else \
        CohortDefinition.parse(cohort)
    key = case_id_key(data.folder)
    with session_scope(data.catalog_url) as session:
        series = {s.series_uid: SeriesRef(s.orthanc_id, s.series_uid)
                  for s in select_series(session, definition)}
        chosen = {uid: (row.id, row.orthanc_id) for uid, row in
                  (label_results(session, sorted(series)) if series else {}).items()}
    staging = out / ".cases"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    built: dict[str, str] = {}  # case id -> series UID
    result = TrainingSet([], [], [], labels, unlabelled=len(series) - len(chosen))
    for uid, (_result_id, seg_instance) in sorted(chosen.items()):
        case = case_id(key, uid)
        try:
            notes = _write_case(data.orthanc, series[uid], seg_instance, labels, staging, case,
                                modality)
        except DicomInputError as exc:
            result.skipped.append(SkippedCase(case, exc.message))
            continue
        built[case] = uid
        if notes:
            result.notes[case] = notes
    result.train, result.held_out = split_cases(built, seed, held_out_fraction)
    result.dataset = _place(staging, out, result, labels, study, modality)
    result.record = write_split_record(record_path, {
        "study": study, "seed": seed, "held_out_fraction": held_out_fraction,
        "cohort_hash": definition.content_hash, "labels": labels, "train": result.train,
        "held_out": result.held_out, "unlabelled": result.unlabelled,
        "skipped": [s.__dict__ for s in result.skipped], "notes": result.notes,
        "cases": {case: {"series_uid": uid, "result_id": chosen[uid][0]}
                  for case, uid in sorted(built.items())}})
    return result


def _write_case(orthanc: Any, ref: SeriesRef, seg_instance: str | None, labels: dict[str, int],
                staging: Path, case: str, modality: str) -> list[str]:
    """Read one case from Orthanc and write its image and label volumes into ``staging``
    (CT as integer HU, as the demo model's training writes it; others as float)."""
    import SimpleITK as sitk

    from radflow.imaging import load_volume

    try:
        volume = load_volume(orthanc, ref, expected_modality=modality)
    except OrthancError as exc:
        raise DicomInputError("the image series cannot be read from Orthanc",
                              fix="check the series in Orthanc") from exc
    found = label_volume(read_seg(orthanc, seg_instance), volume.datasets, labels)
    pixel = sitk.sitkInt16 if modality.upper() == "CT" else sitk.sitkFloat32
    image = sitk.Cast(volume.image, pixel)
    label_image = sitk.GetImageFromArray(found.labels)
    label_image.CopyInformation(volume.image)
    sitk.WriteImage(image, str(staging / f"{case}_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(label_image, str(staging / f"{case}.nii.gz"), useCompression=True)
    return found.notes


def _place(staging: Path, out: Path, result: TrainingSet, labels: dict[str, int],
           study: str, modality: str) -> Path:
    """Move the written cases into the dataset's folders (replacing a previous run's) and
    write ``dataset.json``."""
    for name in FOLDERS:
        if (out / name).exists():
            shutil.rmtree(out / name)
        (out / name).mkdir(parents=True)
    for cases, images, targets in ((result.train, "imagesTr", "labelsTr"),
                                   (result.held_out, "imagesTs", "labelsTs")):
        for case in cases:
            (staging / f"{case}_0000.nii.gz").rename(out / images / f"{case}_0000.nii.gz")
            (staging / f"{case}.nii.gz").rename(out / targets / f"{case}.nii.gz")
    shutil.rmtree(staging)
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": modality}, "labels": labels, "numTraining": len(result.train),
        "file_ending": ".nii.gz", "name": f"radflow federated {study}",
        "numHeldOut": len(result.held_out)}, indent=2))
    return out
