"""pyradiomics features per segment, with units (UCUM) for the SR."""

from __future__ import annotations

import logging
from typing import Any

from radflow.types import FeatureTable

HU = "[hnsf'U]"
UNITS = {  # feature (without the image-type prefix) -> UCUM unit; others are dimensionless
    "shape_MeshVolume": "mm3", "shape_VoxelVolume": "mm3", "shape_SurfaceArea": "mm2",
    "shape_SurfaceVolumeRatio": "/mm", "shape_Maximum3DDiameter": "mm",
    "shape_Maximum2DDiameterSlice": "mm", "shape_Maximum2DDiameterColumn": "mm",
    "shape_Maximum2DDiameterRow": "mm", "shape_MajorAxisLength": "mm",
    "shape_MinorAxisLength": "mm", "shape_LeastAxisLength": "mm",
    **{f"firstorder_{n}": HU for n in ("Mean", "Median", "Minimum", "Maximum", "10Percentile",
                                        "90Percentile", "InterquartileRange", "Range",
                                        "MeanAbsoluteDeviation", "RobustMeanAbsoluteDeviation",
                                        "RootMeanSquared")},
    "firstorder_Variance": f"{HU}2", "firstorder_Energy": f"{HU}2",
    "firstorder_TotalEnergy": f"{HU}2.mm3", "firstorder_Entropy": "bit",
}


def unit_of(feature: str) -> str:
    """UCUM unit of a pyradiomics feature name such as ``original_shape_VoxelVolume``."""
    return UNITS.get(feature.split("_", 1)[1] if "_" in feature else feature, "1")


def extract(image: Any, masks: dict[int, tuple[str, Any]], params: dict[str, Any],
            source_series_uid: str) -> FeatureTable:
    """Features of each segment: ``masks`` maps segment number -> (label, binary SimpleITK mask
    on the image's grid)."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(params)
    table = FeatureTable()
    for number, (label, mask) in sorted(masks.items()):
        result = extractor.execute(image, mask, label=1)
        for name, value in result.items():
            if name.startswith("diagnostics_"):
                continue
            table.rows.append({"source_series_uid": source_series_uid, "segment_number": number,
                               "segment_label": label, "feature": name, "value": float(value),
                               "unit": unit_of(name)})
    return table
