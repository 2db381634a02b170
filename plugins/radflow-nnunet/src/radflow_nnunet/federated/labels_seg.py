"""A DICOM SEG as an nnU-Net label volume on its image series' grid.

The SEG is read by its frames' source image references (how radflow, 3D Slicer and highdicom
write them): frame *f* labels the image whose SOPInstanceUID it references, so the label volume
is aligned slice by slice with the image volume as inference reads it
(:func:`radflow.imaging.load_volume`: the series' images in slice order).

Segments are mapped to the label ids of an nnU-Net ``labels`` map (``{"background": 0,
"liver": 1, ...}``) by their label, else their coded anatomy (the code's meaning, or the
SNOMED CT code radflow knows for the name):

* a label of the map that has no segment in the SEG is *background* in this case: radflow's SEG
  writers (the model's, the editor's, the ground truth's) leave out segments with no voxel, so a
  missing segment means "none of it here" (a note says so);
* a segment that no label of the map names is ignored (a note says so): a site's SEGs may carry
  more anatomy than the model learns;
* where two segments overlap, the higher label id wins (a note counts the voxels).

A SEG that cannot be read, or does not fit the series (another series, other rows and columns,
frames that reference images the series does not hold, none of its frames on the series), raises
:class:`LabelError` with the reason, for the caller to record and skip the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radflow.anatomy import ANATOMY
from radflow.errors import DicomInputError

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class LabelError(DicomInputError):
    """A SEG that cannot serve as a label of its series (the message says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fix="correct or re-import the case's SEG, or reject its "
                                      "result so that it is no longer a label")


@dataclass
class LabelVolume:
    """A label volume (z, y, x; uint8 label ids) and what was noticed on the way."""

    labels: np.ndarray
    notes: list[str] = field(default_factory=list)


def _names(segment: Any) -> set[str]:
    names = {str(segment.get("SegmentLabel", "")).strip().lower()}
    for item in segment.get("SegmentedPropertyTypeCodeSequence", []):
        names.add(str(item.get("CodeMeaning", "")).strip().lower())
        names.update(name for name, code in ANATOMY.items()
                     if code.value == str(item.get("CodeValue", "")))
    return names - {""}


def segment_ids(segments: list[Any], labels: Mapping[str, int]) -> tuple[dict[int, int],
                                                                         list[str]]:
    """Segment number -> label id, by name or coded anatomy; and the notes on segments the map
    does not name and labels no segment has."""
    wanted = {name.strip().lower().replace("_", " "): int(value)
              for name, value in labels.items() if int(value) != 0}
    mapping, notes = {}, []
    for segment in segments:
        names = {n.replace("_", " ") for n in _names(segment)}
        hits = sorted({wanted[n] for n in names if n in wanted})
        if hits:
            mapping[int(segment.SegmentNumber)] = hits[0]
        else:
            notes.append(f"segment {int(segment.SegmentNumber)} "
                         f"({str(segment.get('SegmentLabel', '')) or 'no label'}) is not in the "
                         "labels map: ignored")
    for name, value in sorted(wanted.items(), key=lambda item: item[1]):
        if value not in mapping.values():
            notes.append(f"no segment for {name}: background in this case")
    return mapping, notes


def _frame_sources(seg: Any) -> list[str | None]:
    """The SOPInstanceUID each frame references (None: the frame names none)."""
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    sources = []
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        uid = None
        for group in (frame, shared):
            derivations = group.get("DerivationImageSequence", []) if group is not None else []
            for derivation in derivations:
                for source in derivation.get("SourceImageSequence", []):
                    uid = uid or str(source.ReferencedSOPInstanceUID)
        sources.append(uid)
    return sources


def check_fit(seg: Any, datasets: list[Any]) -> list[str]:
    """Whether a SEG labels this series (datasets in slice order); returns the image UIDs its
    frames reference, in slice order.

    Raises:
        LabelError: it does not.
    """
    if str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE or seg.get("Modality") != "SEG":
        raise LabelError(f"the object is {seg.get('Modality') or 'unknown'}, not a DICOM SEG")
    series_uid = str(datasets[0].SeriesInstanceUID)
    referenced = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    if series_uid not in referenced:
        raise LabelError("the SEG does not reference the case's image series")
    shape = (int(seg.Rows), int(seg.Columns))
    image_shape = (int(datasets[0].Rows), int(datasets[0].Columns))
    if shape != image_shape:
        raise LabelError(f"the SEG's frames are {shape[0]}x{shape[1]}, the series' images "
                         f"{image_shape[0]}x{image_shape[1]}")
    sources = _frame_sources(seg)
    if not sources or None in sources:
        raise LabelError("frames of the SEG do not reference their source images")
    in_series = [str(ds.SOPInstanceUID) for ds in datasets]
    strangers = set(sources) - set(in_series)
    if strangers:
        raise LabelError(f"{len(strangers)} frame(s) of the SEG reference images that the "
                         "series does not hold (misaligned)")
    return [uid for uid in in_series if uid in set(sources)]


def label_volume(seg: Any, datasets: list[Any], labels: Mapping[str, int]) -> LabelVolume:
    """The label volume of a SEG on its series' grid, with the map's label ids.

    Args:
        seg: the SEG (a pydicom Dataset with pixel data).
        datasets: the image series' datasets in slice order (``Volume.datasets``).
        labels: the nnU-Net labels map, name -> id (``background`` 0).

    Raises:
        LabelError: the SEG is unreadable, does not fit the series, or labels no voxel of the
            map.
    """
    import warnings

    import highdicom as hd

    try:
        covered = check_fit(seg, datasets)
        mapping, notes = segment_ids(list(seg.SegmentSequence), labels)
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise LabelError(f"the SEG's header cannot be read: {type(exc).__name__}: {exc}") \
            from exc
    out = np.zeros((len(datasets), int(seg.Rows), int(seg.Columns)), dtype=np.uint8)
    if mapping:
        numbers = sorted(mapping, key=lambda n: (mapping[n], n))  # higher ids painted last
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = hd.seg.Segmentation.from_dataset(seg, copy=False)
                masks = reader.get_pixels_by_source_instance(
                    covered, segment_numbers=numbers, assert_missing_frames_are_empty=True,
                    skip_overlap_checks=True)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError,
                RuntimeError) as exc:
            raise LabelError(f"the SEG cannot be read: {type(exc).__name__}: {exc}") from exc
        rows = [k for k, ds in enumerate(datasets) if str(ds.SOPInstanceUID) in set(covered)]
        painted = np.zeros(out.shape, dtype=bool)
        overlap = 0
        for index, number in enumerate(numbers):
            mask = np.zeros(out.shape, dtype=bool)
            mask[rows] = masks[..., index] > 0
            overlap += int((mask & painted & (out != mapping[number])).sum())
            out[mask] = mapping[number]
            painted |= mask
        if overlap:
            notes.append(f"{overlap} voxel(s) in overlapping segments: the higher label id kept")
    if not out.any():
        raise LabelError("the SEG labels no voxel of the labels map's structures")
    return LabelVolume(out, notes)
