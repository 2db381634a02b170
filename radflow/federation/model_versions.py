"""Models as signed, approvable versions.

A study that trains a model (federated-nnunet-training) leaves a model package in its folder on
the hub: ``plans.json``, ``dataset.json``, a weights-only ``fold_all/checkpoint_final.pth`` and
the model card ``radflow-model.json`` (sites, rounds, cases per site, validation Dice, the study
and the flow version). The hub publishes it as a model version: a manifest naming every file by
its SHA-256, hashed with radflow's canonical hashing and signed with the hub's key, exactly as
flow versions are. A site lists what the hub offers, verified against the hub key it pinned
(``radflow model versions``), approves one by hash (``radflow model approve``: audited), and
installs an approved one (``radflow model install-version``): every file is checked against the
manifest before the model is installed into the nnU-Net plugin. ``radflow pipeline run --model
NAME`` then uses it, and its SEGs name the model's version.

    hub/models/<hex>/signed.json        the signed manifest
    hub/models/<hex>/<file>             the package's files
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from radflow.errors import ConfigurationError, FederationError
from radflow.hashing import digest

MODEL_FILES = ("plans.json", "dataset.json", "fold_all/checkpoint_final.pth",
               "radflow-model.json")
KIND = "nnunet-model"


class ModelVersion(BaseModel):
    """A model version as published (all of it is covered by the hash)."""

    kind: str = KIND
    name: str
    version: str
    study: str | None = None
    card: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="package path -> sha256 hex of its bytes")

    def content_hash(self) -> str:
        return digest(self.model_dump(mode="json"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish_model(models_dir: Path, hub_key_path: Path, package: Path,
                  study: str | None = None) -> dict[str, Any]:
    """Sign a model package and keep it with the hub's models (the same package twice: the
    same hash, published once).

    Raises:
        ConfigurationError: the package lacks a file or its card a name or version.
    """
    from radflow.federation.signing import load, sign

    missing = [f for f in MODEL_FILES if not (package / f).is_file()]
    if missing:
        raise ConfigurationError(f"{package} is no model package: {missing} missing",
                                 fix="publish the model/ folder a training study wrote")
    card = json.loads((package / "radflow-model.json").read_text())
    if not card.get("name") or not card.get("version"):
        raise ConfigurationError(f"{package}'s model card has no name or version",
                                 fix="the card names the model and its version")
    manifest = ModelVersion(name=card["name"], version=str(card["version"]), study=study,
                            card=card, files={f: _sha256(package / f) for f in MODEL_FILES})
    content = manifest.content_hash()
    signed = {"manifest": manifest.model_dump(mode="json"), "hash": content,
              "signature": sign(load(hub_key_path), content.encode()),
              "published_at": datetime.now(UTC).isoformat(timespec="seconds")}
    target = models_dir / content.removeprefix("sha256:")
    if not (target / "signed.json").exists():
        staging = Path(tempfile.mkdtemp(dir=models_dir.parent if models_dir.parent.exists()
                                        else None))
        for name in MODEL_FILES:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / name, staging / name)
        (staging / "signed.json").write_text(json.dumps(signed, indent=2))
        models_dir.mkdir(parents=True, exist_ok=True)
        staging.replace(target)  # whole, or not at all
    return json.loads((target / "signed.json").read_text())


def published(models_dir: Path) -> list[dict[str, Any]]:
    """Every published model version, oldest first."""
    if not models_dir.is_dir():
        return []
    found = [json.loads(p.read_text()) for p in models_dir.glob("*/signed.json")]
    return sorted(found, key=lambda s: (s.get("published_at", ""), s["hash"]))


def model_file(models_dir: Path, model_hash: str, name: str) -> Path | None:
    """A file of a published model version (only the manifest's own files)."""
    hexdigest = model_hash.removeprefix("sha256:")
    if name not in MODEL_FILES or not hexdigest.isalnum():
        return None
    path = models_dir / hexdigest / name
    return path if path.is_file() else None


# -- at a site ----------------------------------------------------------------------------------
def verify_model(signed: dict[str, Any], hub_public_pem: bytes) -> ModelVersion:
    """The manifest of a model version, its hash and the hub's signature checked.

    Raises:
        SignatureInvalid: the hash does not match the manifest, or the signature the hub key.
    """
    from radflow.federation.signing import SignatureInvalid, verify

    manifest = ModelVersion.model_validate(signed["manifest"])
    if digest(signed["manifest"]) != signed.get("hash"):
        raise SignatureInvalid("the model manifest does not match its hash",
                               fix="do not install it; tell the hub's operator")
    verify(hub_public_pem, signed["hash"].encode(), signed.get("signature", ""))
    return manifest


def offered_models(site_root: Path) -> list[dict[str, Any]]:
    """What the hub offers, each verified against the pinned hub key, with this site's
    approval (``approved_models`` in its policy)."""
    from radflow.federation.client import HubClient, federation_dir
    from radflow.federation.policy import load_policy
    from radflow.federation.signing import SignatureInvalid

    pinned = (federation_dir(site_root) / "hub.pub").read_bytes()
    approved = set(load_policy(site_root).approved_models)
    rows = []
    for signed in HubClient(site_root).get_json("/models"):
        try:
            manifest = verify_model(signed, pinned)
            state = "verified"
        except (SignatureInvalid, ValueError, KeyError):
            manifest, state = None, "bad_signature"
        card = (manifest.card if manifest else {}) or {}
        rows.append({"hash": signed.get("hash"), "signature": state,
                     "name": manifest.name if manifest else None,
                     "version": manifest.version if manifest else None,
                     "study": manifest.study if manifest else None,
                     "approved": signed.get("hash") in approved,
                     "published_at": signed.get("published_at"),
                     "federated": card.get("federated", {})})
    return rows


def install_version(site_root: Path, model_hash: str, models_home: Path) -> Path:
    """Download an approved, verified model version, check every file against its manifest,
    and install it under ``models_home/<name>`` (replacing an older version of that name).

    Raises:
        ConfigurationError: not approved here, or not offered.
        FederationError: a file does not match the signed manifest (nothing is installed).
    """
    from radflow.federation.client import HubClient, federation_dir
    from radflow.federation.policy import load_policy

    if model_hash not in load_policy(site_root).approved_models:
        raise ConfigurationError(f"model version {model_hash} is not approved at this site",
                                 fix=f"`radflow model approve {model_hash}` first (a data "
                                     "steward's decision)")
    pinned = (federation_dir(site_root) / "hub.pub").read_bytes()
    client = HubClient(site_root)
    offered = [s for s in client.get_json("/models") if s.get("hash") == model_hash]
    if not offered:
        raise ConfigurationError(f"the hub offers no model version {model_hash}",
                                 fix="install a hash that `radflow model versions` lists")
    manifest = verify_model(offered[0], pinned)
    target = models_home / manifest.name
    models_home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_home))
    try:
        for name, want in manifest.files.items():
            answer = client.get(f"/models/{model_hash}/files/{name}")
            if answer.status_code != 200 or hashlib.sha256(answer.content).hexdigest() != want:
                raise FederationError(f"{name} of model version {model_hash} does not match "
                                      "its signed manifest", fix="nothing was installed; tell "
                                                                 "the hub's operator")
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(answer.content)
        card = json.loads((staging / "radflow-model.json").read_text())
        card["model_version"] = model_hash
        (staging / "radflow-model.json").write_text(json.dumps(card, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
