"""The re-identification record: which patient each pseudonym of a project stands for. It
stays at the site, encrypted at rest (AES-256-GCM under a key of its own, readable by the
site's user only, kept apart from the project keys), and is read only by
:func:`reidentify`, which writes its audit event before it answers."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from radflow.errors import ConfigurationError, NotFound


def _folder(root: Path) -> Path:
    folder = root / "export" / "mapping"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _key(root: Path) -> bytes:
    path = _folder(root) / "mapping.key"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_bytes(32).hex() + "\n")
    return bytes.fromhex(path.read_text().strip())


def _read(root: Path, project: str) -> dict[str, dict]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    path = _folder(root) / f"{project}.bin"
    if not path.exists():
        return {}
    blob = path.read_bytes()
    try:
        plain = AESGCM(_key(root)).decrypt(blob[:12], blob[12:], project.encode())
    except InvalidTag as exc:
        raise ConfigurationError(f"the re-identification record {path} does not decrypt",
                                 fix="restore it and export/mapping/mapping.key together from "
                                     "the site's backup") from exc
    return json.loads(plain)


def remember(root: Path, project: str, export_id: str, patients: dict[str, str]) -> None:
    """Add an export's pseudonym pairs to the project's record."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    record = _read(root, project)
    for pseudonym, patient_id in patients.items():
        entry = record.setdefault(pseudonym, {"patient_id": patient_id, "exports": []})
        if export_id not in entry["exports"]:
            entry["exports"].append(export_id)
    nonce = secrets.token_bytes(12)
    blob = nonce + AESGCM(_key(root)).encrypt(nonce, json.dumps(record).encode(), project.encode())
    path = _folder(root) / f"{project}.bin"
    partial = path.with_suffix(".part")
    partial.write_bytes(blob)
    os.chmod(partial, 0o600)
    partial.replace(path)


def reidentify(root: Path, catalog_url: str, project: str, pseudonym: str, *, actor: str,
               reason: str) -> dict:
    """The patient behind ``pseudonym``, after the audit event that says who asked and why."""
    from radflow.audit import record

    if len(reason.strip()) < 10:
        raise ConfigurationError("re-identification needs a reason of at least 10 characters",
                                 fix="say why, e.g. --reason 'incidental finding to report'")
    entry = _read(root, project).get(pseudonym)
    record(catalog_url, actor=actor, action="export.reidentified",
           subject=f"export-project:{project}",
           detail={"pseudonym": pseudonym, "found": entry is not None, "reason": reason})
    if entry is None:
        raise NotFound(f"pseudonym {pseudonym!r} is in no export of project {project!r}",
                       fix="check the pseudonym and the project")
    return {"pseudonym": pseudonym, **entry}
