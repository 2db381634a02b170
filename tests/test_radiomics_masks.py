"""Features of masks that a weak model makes: a segment of a few voxels gives pyradiomics a nan
(RobustMeanAbsoluteDeviation), one of one voxel an error. Such a feature, or such a segment, is
left out with a warning; the others are kept (an SR cannot carry nan: the case failed)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

pytest.importorskip("radiomics")


def _image_and_masks():
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(40, 10, (16, 16, 16)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    masks = {}
    for number, (label, voxels) in enumerate((
            ("liver", np.s_[5:11, 5:11, 5:11]), ("spleen", [(8, 8, 8), (9, 9, 9)]),
            ("kidney", [(3, 3, 3)])), start=1):
        array = np.zeros((16, 16, 16), np.uint8)
        if isinstance(voxels, list):
            for z, y, x in voxels:
                array[z, y, x] = 1
        else:
            array[voxels] = 1
        mask = sitk.GetImageFromArray(array)
        mask.CopyInformation(image)
        masks[number] = (label, mask)
    return image, masks


def test_undefined_features_and_too_small_segments_are_left_out(caplog) -> None:
    from radflow_radiomics.block import RadiomicsParams
    from radflow_radiomics.features import extract

    image, masks = _image_and_masks()
    with caplog.at_level(logging.WARNING, logger="radflow_radiomics.features"):
        table = extract(image, masks, RadiomicsParams().to_pyradiomics(), "1.2.3")

    assert all(math.isfinite(r["value"]) for r in table.rows)
    by_segment = {n: {r["feature"] for r in table.rows if r["segment_number"] == n}
                  for n in (1, 2, 3)}
    assert len(by_segment[1]) == 56  # the liver: every feature
    assert "original_firstorder_RobustMeanAbsoluteDeviation" not in by_segment[2]
    assert len(by_segment[2]) == 55  # the spleen: all but the one pyradiomics gives nan
    assert by_segment[3] == set()  # the kidney of one voxel: none
    said = caplog.text
    assert "RobustMeanAbsoluteDeviation of segment 2 (spleen) of series 1.2.3" in said
    assert "segment 3 (kidney) of series 1.2.3 is left out" in said
