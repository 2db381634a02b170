"""pyradiomics features per segment, coded in the standard's terms: IBSI codes where pyradiomics
computes the IBSI feature (``ibsi.tsv``), UCUM units.

Features without an IBSI code (the 2D maximum diameters, total energy, MCC, filtered-image
features) keep their pyradiomics name in the catalog's feature table and are left out of the
DICOM SR: a private coding scheme, even declared in CodingSchemeIdentificationSequence, is a
``dciodvfy`` warning per use, and readers (dcmqi, 3D Slicer) cannot interpret it anyway."""

from __future__ import annotations

import csv
import logging
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from radflow.sdk import FeatureTable

logger = logging.getLogger(__name__)
IBSI = "IBSI"
SCHEMES = {IBSI: {"name": "Image Biomarker Standardisation Initiative",
                  "organization": "Image Biomarker Standardisation Initiative (IBSI)"}}
HU = "[hnsf'U]"
UNIT_MEANINGS = {"mm3": "cubic millimeter", "mm2": "square millimeter", "mm": "millimeter",
                 "/mm": "per millimeter", HU: "Hounsfield unit", f"{HU}2": "Hounsfield unit squared",
                 f"{HU}2.mm3": "Hounsfield unit squared cubic millimeter", "bit": "bit",
                 "1": "no units"}
UNITS = {  # feature (without the image-type prefix) -> UCUM unit; others are dimensionless
    "shape_MeshVolume": "mm3", "shape_VoxelVolume": "mm3", "shape_SurfaceArea": "mm2",
    "shape_SurfaceVolumeRatio": "/mm", "shape_Maximum3DDiameter": "mm",
    "shape_Maximum2DDiameterSlice": "mm", "shape_Maximum2DDiameterColumn": "mm",
    "shape_Maximum2DDiameterRow": "mm", "shape_MajorAxisLength": "mm",
    "shape_MinorAxisLength": "mm", "shape_LeastAxisLength": "mm",
    **{f"firstorder_{n}": HU for n in ("Mean", "Median", "Minimum", "Maximum", "10Percentile",
                                        "90Percentile", "InterquartileRange", "Range",
                                        "MeanAbsoluteDeviation", "RobustMeanAbsoluteDeviation",
                                        "RootMeanSquared", "StandardDeviation")},
    "firstorder_Variance": f"{HU}2", "firstorder_Energy": f"{HU}2",
    "firstorder_TotalEnergy": f"{HU}2.mm3", "firstorder_Entropy": "bit",
}


@dataclass(frozen=True)
class FeatureCode:
    """A feature's coded concept: code value, scheme designator and meaning; ``offset`` turns
    pyradiomics' value into the coded feature's value."""

    value: str
    scheme: str
    meaning: str
    offset: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.scheme}:{self.value}"


@lru_cache(maxsize=1)
def ibsi_table() -> dict[tuple[str, str], FeatureCode]:
    """(pyradiomics class, feature) -> its IBSI code."""
    lines = (Path(__file__).with_name("ibsi.tsv").read_text().splitlines())
    rows = csv.DictReader((ln for ln in lines if ln and not ln.startswith("#")), delimiter="\t")
    return {(r["class"], r["feature"]): FeatureCode(r["code"], IBSI, r["meaning"],
                                                    float(r["offset"])) for r in rows}


def feature_code(name: str) -> FeatureCode | None:
    """The IBSI code of a pyradiomics feature name such as ``original_shape_VoxelVolume``
    (features of the original image only); None for a feature IBSI does not define."""
    image_type, _, rest = name.partition("_")
    feature_class, _, feature = rest.partition("_")
    if image_type == "original":
        return ibsi_table().get((feature_class, feature))
    return None


def unit_of(feature: str) -> str:
    """UCUM unit of a pyradiomics feature name such as ``original_shape_VoxelVolume``."""
    return UNITS.get(feature.split("_", 1)[1] if "_" in feature else feature, "1")


_EXTRACTOR_LOCK = threading.Lock()


def extract(image: Any, masks: dict[int, tuple[str, Any]], params: dict[str, Any],
            source_series_uid: str) -> FeatureTable:
    """Features of each segment: ``masks`` maps segment number -> (label, binary SimpleITK mask
    on the image's grid). A segment too small for pyradiomics (one voxel, one line) and a
    feature it leaves undefined on a small mask (nan) are left out, with a warning: an SR
    cannot carry nan, and a statistic over sites must not meet one."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    with _EXTRACTOR_LOCK:  # its parameter validation (pykwalify, ruamel) is not thread-safe
        extractor = featureextractor.RadiomicsFeatureExtractor(params)
    table = FeatureTable()
    for number, (label, mask) in sorted(masks.items()):
        try:
            result = extractor.execute(image, mask, label=1)
        except ValueError as exc:  # a segment of one voxel, or one line of voxels
            logger.warning("segment %s (%s) of series %s is left out of the features: %s",
                           number, label, source_series_uid, exc)
            continue
        for name, value in result.items():
            if name.startswith("diagnostics_"):
                continue
            if not math.isfinite(float(value)):  # not defined on so small a mask
                logger.warning("feature %s of segment %s (%s) of series %s is left out: "
                               "pyradiomics gives %s for this mask", name, number, label,
                               source_series_uid, value)
                continue
            table.rows.append({"source_series_uid": source_series_uid, "segment_number": number,
                               "segment_label": label, "feature": name,
                               "code": code.label if (code := feature_code(name)) else None,
                               "value": float(value),
                               "unit": unit_of(name)})
    return table
