"""The validation round at a site: Dice per organ of a model on the site's held-out cases, and
the aggregate the site may release (mean, sd and n per organ; never a case's value).

The model is predicted through radflow's predictor (``radflow_nnunet.predictor``) with the
model's inference settings (a model folder: its card's ``inference``; weights in memory: the
plan's patch, a 0.75 sliding-window step, no mirroring, as the demo model's card has), and
scored per label by nnU-Net's own ``compute_tp_fp_fn_tn``. An organ that is absent from both the
reference and the prediction of a case has no Dice for that case (NaN, as nnU-Net reports it)
and does not count in that organ's n.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radflow.errors import ConfigurationError
from radflow_nnunet.federated.weights import CONFIGURATION, TRAINER_NAME, state_dict_from_vector

DEFAULT_INFERENCE = {"tile_step_size": 0.75, "use_mirroring": False}


def _as_image(item: Any) -> Any:
    import SimpleITK as sitk

    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.exists():
            raise ConfigurationError(f"no image at {path}", fix="pass existing image/label "
                                     "files (NIfTI) or SimpleITK images")
        return sitk.ReadImage(str(path))
    return item


def _load(model: Any, configuration: str, inference: dict[str, Any] | None) -> Any:
    """A LoadedModel from a model folder or from ``(plans, dataset_json, vector)``."""
    from radflow_nnunet.predictor import load_model, model_from_weights

    if isinstance(model, (str, Path)):
        folder = Path(model)
        card_file = folder / "radflow-model.json"
        card = json.loads(card_file.read_text()) if card_file.exists() else {}
        settings = DEFAULT_INFERENCE | card.get("inference", {}) | (inference or {})
        return load_model(folder, configuration=card.get("configuration", configuration),
                          use_mirroring=bool(settings["use_mirroring"]),
                          patch_size=settings.get("patch_size"),
                          tile_step_size=float(settings["tile_step_size"]))
    if not (isinstance(model, tuple) and len(model) == 3):
        raise ConfigurationError(f"cannot evaluate a {type(model).__name__}",
                                 fix="pass a model folder or (plans, dataset_json, vector)")
    plans, dataset_json, vector = model
    settings = DEFAULT_INFERENCE | (inference or {})
    state = state_dict_from_vector(plans, dataset_json, vector, configuration)
    patch = plans["configurations"][configuration]["patch_size"]
    return model_from_weights(plans, dataset_json, [state], configuration, "cpu",
                              use_mirroring=bool(settings["use_mirroring"]),
                              patch=settings.get("patch_size"),
                              tile_step_size=float(settings["tile_step_size"]),
                              mirroring=tuple(range(len(patch))), trainer=TRAINER_NAME)


def dice_per_organ(reference: np.ndarray, predicted: np.ndarray,
                   labels: dict[int, str]) -> dict[str, float]:
    """Dice of each label (nnU-Net's counting); NaN where the organ is in neither."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    scores = {}
    for value, organ in sorted(labels.items()):
        tp, fp, fn, _ = compute_tp_fp_fn_tn(reference == value, predicted == value)
        scores[organ] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else math.nan
    return scores


def evaluate(model: Any, cases: Sequence[tuple[Any, Any]], *,
             configuration: str = CONFIGURATION,
             inference: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Dice per organ per held-out case, computed at the site (never released as such).

    Args:
        model: a model folder (``export_model``'s or an installed one) or
            ``(plans, dataset_json, vector)`` with a flat weight vector in ``layout`` order.
        cases: ``(image, label)`` pairs, each a SimpleITK image or a file path; a label image
            has its image's grid.
        inference: overrides of the inference settings (patch_size, tile_step_size,
            use_mirroring).

    Returns:
        One ``{organ: Dice}`` per case, in order.

    Raises:
        ConfigurationError: no cases, a missing file, or a label whose grid is not its image's.
    """
    import SimpleITK as sitk

    from radflow_nnunet.predictor import predict

    if not cases:
        raise ConfigurationError("no held-out cases to evaluate",
                                 fix="pass the site's held-out (image, label) pairs")
    loaded = _load(model, configuration, inference)
    results = []
    for index, (image_item, label_item) in enumerate(cases):
        image, label = _as_image(image_item), _as_image(label_item)
        if image.GetSize() != label.GetSize():
            raise ConfigurationError(
                f"held-out case {index}: the label's grid {label.GetSize()} is not its "
                f"image's {image.GetSize()}", fix="resample the label onto its image's grid")
        predicted = sitk.GetArrayFromImage(predict(loaded, image))
        reference = sitk.GetArrayFromImage(label).astype(np.int64)
        results.append(dice_per_organ(reference, predicted, loaded.labels))
    return results


def dice_aggregate(per_case: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """What a site releases of its validation: ``{organ: {mean, sd, n}}`` over the cases that
    have a Dice for the organ (sd: sample standard deviation; 0 for one case)."""
    organs = sorted({organ for case in per_case for organ in case})
    out: dict[str, dict[str, float]] = {}
    for organ in organs:
        values = np.array([c[organ] for c in per_case
                           if organ in c and not math.isnan(c[organ])], dtype=float)
        n = int(values.size)
        out[organ] = {"mean": float(values.mean()) if n else 0.0,
                      "sd": float(values.std(ddof=1)) if n > 1 else 0.0, "n": n}
    return out


def field_prefix(organ: str) -> str:
    """An organ's name as a release field prefix (lower_snake_case, no extreme-value word).

    Raises:
        ConfigurationError: a name that gives no valid field name.
    """
    name = re.sub(r"[^a-z0-9]+", "_", organ.lower()).strip("_")
    parts = [p for p in name.split("_") if p not in ("min", "max", "minimum", "maximum",
                                                     "range", "extreme")]
    name = "_".join(parts)
    if not re.match(r"^[a-z][a-z0-9_]{0,50}$", name):
        raise ConfigurationError(f"organ {organ!r} gives no release field name",
                                 fix="name labels with letters first (dataset.json labels)")
    return name


def dice_release_schema(organs: Sequence[str]) -> dict[str, Any]:
    """The validation round's release schema (``radflow.federation.release.ReleaseSchema``
    as a dict): ``n`` (held-out cases) and, per organ, ``<organ>_dice_n`` (a count: the mean
    of few cases is close to a case's value, so under the policy's min_cell the whole release
    is refused), ``<organ>_dice_mean`` and ``<organ>_dice_sd`` (kind sum)."""
    fields: dict[str, Any] = {"n": {"kind": "count", "description": "held-out cases evaluated"}}
    for organ in organs:
        prefix = field_prefix(organ)
        fields[f"{prefix}_dice_n"] = {"kind": "count", "small": "refuse",
                                      "description": f"held-out cases with a {organ} Dice"}
        fields[f"{prefix}_dice_mean"] = {"kind": "sum", "description": f"mean Dice of {organ}"}
        fields[f"{prefix}_dice_sd"] = {"kind": "sum", "description": f"sd of {organ}'s Dice"}
    return {"cohort_field": "n", "fields": fields}


def dice_release(per_case: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The validation release (fields of ``dice_release_schema``) from per-case Dice: only
    n, and mean, sd and n per organ leave the site."""
    release: dict[str, Any] = {"n": len(per_case)}
    for organ, agg in dice_aggregate(per_case).items():
        prefix = field_prefix(organ)
        release[f"{prefix}_dice_n"] = agg["n"]
        release[f"{prefix}_dice_mean"] = round(agg["mean"], 6)
        release[f"{prefix}_dice_sd"] = round(agg["sd"], 6)
    return release
