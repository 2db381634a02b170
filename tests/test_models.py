"""nnU-Net models: the built-in model, nnU-Net's own zip format in and out, SNOMED CT codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from radflow.errors import ConfigurationError
from radflow_nnunet.block import NnUNetModel
from radflow_nnunet.models import DEFAULT_MODEL, get_model, install_zip, list_models


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("RADFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_builtin_model_is_complete_and_accurate(tmp_path: Path) -> None:
    """The shipped model segments a phantom it has never seen (a seed outside its training
    and validation sets) with Dice >= 0.90 per organ, measured here, not read from its card."""
    import numpy as np
    import SimpleITK as sitk

    from radflow.synth import synthesize
    from radflow_nnunet.predictor import load_model, predict

    model = get_model(DEFAULT_MODEL)
    assert model.builtin
    assert (model.path / "fold_all" / "checkpoint_final.pth").stat().st_size < 8_000_000
    case = synthesize(tmp_path, 1, seed=424242, matrix=96)[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case.dicom_dir)))
    image = reader.Execute()
    labels = sitk.GetArrayFromImage(predict(load_model(model.path), image))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
    for name, value in (("liver", 1), ("spleen", 2), ("kidney", 3)):
        a, b = labels == value, truth == value
        dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert dice >= 0.90, f"{name}: Dice {dice:.3f}"
    assert set(model.card["evaluation"]["dice"]) == {"liver", "spleen", "kidney"}
    block = NnUNetModel(**model.block_fields())
    assert block.labels["1"] == {"name": "liver", "code": "10200004", "scheme": "SCT",
                                 "meaning": "Liver"}
    assert block.labels["3"]["code"] == "64033007" and "0" not in block.labels


def test_a_zip_exported_by_nnunet_installs(home: Path, tmp_path: Path, cli) -> None:
    """nnU-Net's own exporter writes the zip; radflow installs, lists and describes it."""
    builtin = get_model(DEFAULT_MODEL)
    trained = tmp_path / "results" / builtin.card["dataset"] / \
        f"{builtin.card['trainer']}__{builtin.card['plans']}__3d_fullres"
    shutil.copytree(builtin.path, trained, ignore=shutil.ignore_patterns("radflow-model.json"))
    zip_path = tmp_path / "model.zip"
    script = ("from nnunetv2.model_sharing.model_export import export_pretrained_model\n"
              f"export_pretrained_model({builtin.card['dataset']!r}, {str(zip_path)!r}, "
              f"configurations=('3d_fullres',), trainer={builtin.card['trainer']!r}, "
              f"plans_identifier={builtin.card['plans']!r}, folds=('all',), strict=True, "
              "save_checkpoints=('checkpoint_final.pth',), export_crossval_predictions=False)\n")
    env = {**os.environ, "nnUNet_results": str(tmp_path / "results"),
           "nnUNet_raw": str(tmp_path), "nnUNet_preprocessed": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert zipfile.is_zipfile(zip_path)

    out = cli("model", "install", str(zip_path), "--name", "abdomen-from-zip", check=True)
    assert "installed abdomen-from-zip" in out.stdout
    listed = {m["name"]: m for m in json.loads(cli("model", "list", "--json", check=True).stdout)}
    assert listed["abdomen-from-zip"]["builtin"] is False
    assert listed["abdomen-from-zip"]["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    installed = get_model("abdomen-from-zip")
    assert NnUNetModel(**installed.block_fields()).labels["2"]["code"] == "78961009"
    assert {m.name for m in list_models()} >= {DEFAULT_MODEL, "abdomen-from-zip"}


def test_labels_without_a_known_code_are_refused(home: Path, tmp_path: Path) -> None:
    builtin = get_model(DEFAULT_MODEL)
    folder = tmp_path / "z" / "Dataset777_Odd" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(builtin.path, folder, ignore=shutil.ignore_patterns("radflow-model.json"))
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "tumour-core": 1}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    zip_path = shutil.make_archive(str(tmp_path / "odd"), "zip", tmp_path / "z")
    with pytest.raises(ConfigurationError,
                       match="no SNOMED CT code is known for label 'tumour-core'") as info:
        install_zip(Path(zip_path))
    assert "radflow-model.json" in info.value.fix
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_unknown_model_lists_the_installed_ones(home: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"models: {DEFAULT_MODEL}"):
        get_model("no-such-model")


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.zip"
    bogus.write_text("not a zip")
    with pytest.raises(ConfigurationError, match="not a zip file"):
        install_zip(bogus)
