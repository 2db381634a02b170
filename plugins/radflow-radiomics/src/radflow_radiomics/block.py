"""The ``RadiomicsParams`` block: pyradiomics settings, with a hash that versions results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

from radflow.hashing import short_hash
from radflow.sdk import ConfigurationError

DEFAULT_CLASSES = {"shape": [], "firstorder": [], "glcm": []}


class RadiomicsParams(Block):
    """pyradiomics extraction settings (the fields of a pyradiomics parameter file).

    The default: the original image, shape, first-order and GLCM features (an empty list means
    every feature of the class), fixed bin width 25 HU, no resampling (the segmentation and the
    image share their grid). ``radflow site up`` saves it as ``default``; a pyradiomics YAML file
    imports with :meth:`from_yaml`.

    Example:
        ```python
        from radflow_radiomics.block import RadiomicsParams

        params = RadiomicsParams.load("default")
        print(params.version_hash(), params.to_pyradiomics())
        ```
    """

    _block_type_name = "radflow Radiomics Params"
    _block_type_slug = "radflow-radiomics-params"
    _description = "pyradiomics settings: image types, feature classes, settings (bin width...)."

    image_types: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"Original": {}},
        description="pyradiomics imageType: filters to apply (Original, LoG, Wavelet...).",
        examples=[{"Original": {}, "LoG": {"sigma": [1.0, 3.0]}}])
    feature_classes: dict[str, list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_CLASSES),
        description="pyradiomics featureClass: class -> features ([] = all of the class).",
        examples=[{"shape": [], "firstorder": ["Mean", "Median"], "glcm": []}])
    settings: dict[str, Any] = Field(
        default_factory=lambda: {"binWidth": 25, "label": 1, "correctMask": True,
                                 "geometryTolerance": 1e-4},
        description="pyradiomics setting: binWidth, resampledPixelSpacing, normalize...",
        examples=[{"binWidth": 25, "resampledPixelSpacing": [1, 1, 1]}])

    def to_pyradiomics(self) -> dict[str, Any]:
        """The parameter dict pyradiomics' RadiomicsFeatureExtractor takes."""
        return {"imageType": self.image_types, "featureClass": self.feature_classes,
                "setting": self.settings}

    def version_hash(self) -> str:
        """``params-<12 hex>``: part of the SR's cache key (other settings, other results)."""
        return "params-" + short_hash(self.to_pyradiomics())

    @classmethod
    def from_yaml(cls, path: str | Path) -> RadiomicsParams:
        """Read a pyradiomics parameter file (YAML with imageType, featureClass, setting).

        Raises:
            ConfigurationError: the file is not a pyradiomics parameter file.
        """
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - {"imageType", "featureClass", "setting", "voxelSetting"}
        if not isinstance(data, dict) or unknown:
            raise ConfigurationError(
                f"{path} is not a pyradiomics parameter file (unexpected keys {sorted(unknown)})",
                fix="use the keys imageType, featureClass and setting (see pyradiomics' docs)")
        classes = {k: list(v or []) for k, v in (data.get("featureClass") or DEFAULT_CLASSES).items()}
        return cls(image_types=data.get("imageType") or {"Original": {}}, feature_classes=classes,
                   settings={"label": 1, **(data.get("setting") or {})})


def setup_site(ctx: Any) -> None:
    """Save the documented default parameters as the ``default`` block, once; kept if edited
    (the plugin's ``setup_site`` hook, called by `radflow site up`)."""
    try:
        RadiomicsParams.load("default")
    except ValueError:
        RadiomicsParams().save("default")
