"""Installed nnU-Net models: the built-in demo model and those from `radflow model install`.

A model is a trained nnU-Net model folder (``plans.json``, ``dataset.json``, ``fold_*/``) plus
radflow's model card ``radflow-model.json`` (name, version, modality, SNOMED CT codes of the
labels, inference settings, evaluation). ``install_zip`` takes nnU-Net's own export format
(``nnUNetv2_export_model_to_zip``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radflow.anatomy import code_for
from radflow.errors import ConfigurationError
from radflow.settings import get_settings

BUILTIN_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "radflow-abdomen-demo"
CARD = "radflow-model.json"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    path: Path
    builtin: bool
    card: dict[str, Any]

    def block_fields(self) -> dict[str, Any]:
        """The fields of this model's NnUNetModel block."""
        labels = {}
        for name, spec in self.card["labels"].items():
            value = spec["value"] if isinstance(spec, dict) else spec
            if int(value) == 0:
                continue
            code = code_for(name, spec if isinstance(spec, dict) and "code" in spec else None)
            labels[str(value)] = {"name": name, "code": code.value, "scheme": code.scheme_designator,
                                  "meaning": code.meaning}
        inference = self.card.get("inference", {})
        return {"name": self.name, "version": self.version, "model_dir": str(self.path),
                "dataset": self.card.get("dataset", ""),
                "configuration": self.card.get("configuration", "3d_fullres"),
                "folds": [str(f) for f in self.card.get("folds", ["all"])],
                "checkpoint": self.card.get("checkpoint", "checkpoint_final.pth"),
                "modality": self.card.get("modality", "CT"), "labels": labels,
                "use_mirroring": bool(inference.get("use_mirroring", False)),
                "patch_size": inference.get("patch_size"),
                "tile_step_size": float(inference.get("tile_step_size", 0.5))}


def models_home() -> Path:
    return get_settings().home_dir / "models"


def _read(folder: Path, builtin: bool) -> ModelInfo | None:
    card_file = folder / CARD
    if not card_file.exists() or not (folder / "plans.json").exists():
        return None
    card = json.loads(card_file.read_text())
    return ModelInfo(card["name"], str(card.get("version", "0")), folder, builtin, card)


def list_models() -> list[ModelInfo]:
    """The built-in models, then those installed under RADFLOW_HOME/models."""
    found = []
    for base, builtin in ((BUILTIN_DIR, True), (models_home(), False)):
        if base.is_dir():
            found += [m for d in sorted(base.iterdir()) if d.is_dir() and (m := _read(d, builtin))]
    return found


def get_model(name: str) -> ModelInfo:
    """An installed model by name.

    Raises:
        ConfigurationError: not installed (the message lists those that are).
    """
    for model in list_models():
        if model.name == name:
            return model
    known = ", ".join(m.name for m in list_models()) or "none"
    raise ConfigurationError(f"no nnU-Net model named {name!r} is installed (models: {known})",
                             fix="install it with `radflow model install ZIP` "
                                 "(or build the demo model with `radflow model train-demo`)")


def _trained_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("plans.json")
                   if (p.parent / "dataset.json").exists() and any(p.parent.glob("fold_*/*.pth"))})


def install_zip(zip_path: Path, name: str | None = None, card: dict[str, Any] | None = None) -> ModelInfo:
    """Install a model exported by nnU-Net (``nnUNetv2_export_model_to_zip``) or by radflow.

    The zip's trained-model folder (``Dataset.../Trainer__Plans__configuration/``) is copied to
    RADFLOW_HOME/models/<name>/. A radflow model card inside it is kept; otherwise one is made
    from the zip's dataset.json and the known SNOMED CT codes of its label names.

    Raises:
        ConfigurationError: the zip holds no trained model, several (pass one by name), or a
            label without a known code.
    """
    if not zipfile.is_zipfile(zip_path):
        raise ConfigurationError(f"{zip_path} is not a zip file",
                                 fix="export the model with `nnUNetv2_export_model_to_zip`")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tmp)
        folders = _trained_folders(Path(tmp))
        if len(folders) != 1:
            raise ConfigurationError(
                f"{zip_path} holds {len(folders)} trained nnU-Net model folders (plans.json, "
                "dataset.json and fold_*/checkpoint)", fix="export one configuration per zip")
        folder = folders[0]
        dataset_json = json.loads((folder / "dataset.json").read_text())
        trainer, _, rest = folder.name.partition("__")
        configuration = rest.rpartition("__")[2] or "3d_fullres"
        existing = json.loads((folder / CARD).read_text()) if (folder / CARD).exists() else {}
        card = {"name": name or existing.get("name") or f"{folder.parent.name}-{configuration}".lower(),
                "version": existing.get("version", "1"), "configuration": configuration,
                "dataset": folder.parent.name, "trainer": trainer,
                "folds": sorted(p.name.removeprefix("fold_") for p in folder.glob("fold_*")),
                "modality": existing.get("modality", next(iter(dataset_json["channel_names"].values()))),
                "labels": existing.get("labels", dataset_json["labels"]),
                **{k: v for k, v in existing.items() if k in ("inference", "evaluation", "training")},
                **(card or {})}
        target = models_home() / card["name"]
        info = ModelInfo(card["name"], card["version"], target, False, card)
        info.block_fields()  # every label must have a code before anything is written
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
        (target / CARD).write_text(json.dumps(card, indent=2))
    return info


def export_zip(model: ModelInfo, zip_path: Path) -> Path:
    """Write a model in nnU-Net's export layout (installable by `radflow model install` and by
    ``nnUNetv2_install_pretrained_model_from_zip``)."""
    card = model.card
    inner = f"{card.get('dataset', 'Dataset999_Radflow')}/" \
            f"{card.get('trainer', 'nnUNetTrainer')}__{card.get('plans', 'nnUNetPlans')}__" \
            f"{card.get('configuration', '3d_fullres')}"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(model.path.rglob("*")):
            if path.is_file():
                archive.write(path, f"{inner}/{path.relative_to(model.path)}")
    return zip_path
