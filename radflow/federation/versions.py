"""The flow versions a hub offers, as a site sees them: each verified against the hub key the
site pinned, with the site's approval and what changed since the last approved version of the
same flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radflow.errors import RadflowError
from radflow.federation.bundle import unpack
from radflow.federation.client import BUSY, HubClient, federation_dir
from radflow.federation.manifest import SignedVersion, verify_version
from radflow.federation.policy import load_policy
from radflow.federation.signing import SignatureInvalid

COMPARED = ("label", "site_entrypoint", "coordinator_entrypoint", "plugins", "parameter_schema",
            "release_schema", "resources", "files")


def offered(site_root: Path) -> list[dict[str, Any]]:
    client = HubClient(site_root)
    pinned = (federation_dir(site_root) / "hub.pub").read_bytes()
    approved = set(load_policy(site_root).approved)
    rows, last_approved = [], {}
    for item in client.get_json("/versions"):
        try:
            signed = SignedVersion.from_wire(item["signed"])
        except ValueError:
            rows.append({"hash": item["hash"], "name": item["signed"]["manifest"].get("name"),
                         "signature": "unsupported_version", "approved": item["hash"] in
                         approved, "published_at": item["published_at"]})
            continue
        try:
            verify_version(signed, pinned)
            state = "verified"
        except SignatureInvalid:
            state = "bad_signature"
        manifest = signed.manifest
        before = last_approved.get(manifest.name)
        changes = [] if before is None else [
            k for k in COMPARED if getattr(before, k) != getattr(manifest, k)]
        rows.append({"hash": item["hash"], "name": manifest.name, "label": manifest.label,
                     "publisher": manifest.publisher, "published_at": item["published_at"],
                     "signature": state, "approved": item["hash"] in approved,
                     "release_schema": manifest.release_schema.json_schema(),
                     "changed_since_approved": changes if before is not None else None})
        if item["hash"] in approved and state == "verified":
            last_approved[manifest.name] = manifest
    return rows


class UnsupportedVersion(RadflowError):
    """A manifest with fields or rules this radflow does not know (refusal
    ``unsupported_version``)."""


def fetch(site_root: Path, version_hash: str) -> tuple[SignedVersion, dict[str, bytes]]:
    """A version's manifest and files from the hub, verified (:func:`verify_files`).

    Raises:
        SignatureInvalid: anything does not verify (refusal code ``bad_signature``).
        UnsupportedVersion: a manifest this radflow cannot read.
        HubUnavailable: the hub did not answer, or answered busy (tried again later).
    """
    client = HubClient(site_root)
    listing = {item["hash"]: item for item in client.get_json("/versions")}
    if version_hash not in listing:
        raise SignatureInvalid(f"the hub offers no version {version_hash}",
                               fix="see radflow site versions")
    answer = client.get(f"/versions/{version_hash}/bundle")
    if answer.status_code in BUSY:  # (a hub restarting, a proxy): asked again, not refused
        raise client.unavailable(answer, "the bundle")
    return verify_files(site_root, version_hash, listing[version_hash]["signed"],
                        answer.content, f"HTTP {answer.status_code}")


def verify_files(site_root: Path, version_hash: str, wire: dict[str, Any], bundle: bytes,
                 came: str = "a job file") -> tuple[SignedVersion, dict[str, bytes]]:
    """A version's manifest and files, verified, whether they came from the hub or in a job
    file (radflow.federation.offline): the signature against the pinned key, the manifest
    against its hash, every file against the manifest.

    Raises:
        SignatureInvalid: anything does not verify (refusal code ``bad_signature``).
        UnsupportedVersion: a manifest this radflow cannot read.
    """
    pinned = (federation_dir(site_root) / "hub.pub").read_bytes()
    try:
        signed = SignedVersion.from_wire(wire)
    except ValueError as exc:  # pydantic: a field or rule this radflow does not know
        raise UnsupportedVersion(f"version {version_hash} has a manifest this radflow cannot "
                                 f"read: {str(exc).splitlines()[0]}",
                                 fix="upgrade radflow at the site, or ask the hub for a version "
                                     "built for it") from None
    try:
        files = unpack(bundle)
    except Exception as exc:
        raise SignatureInvalid("the bundle cannot be read", fix="refuse it") from exc
    if signed.hash != version_hash:
        raise SignatureInvalid("the listing's hash is not the manifest's", fix="refuse it")
    try:
        verify_version(signed, pinned, files)
    except SignatureInvalid as exc:
        from radflow.federation.manifest import file_hashes

        got = file_hashes(files)
        changed = sorted(k for k in set(got) | set(signed.manifest.files)
                         if got.get(k) != signed.manifest.files.get(k))
        raise SignatureInvalid(f"{exc.message} (files: {', '.join(changed) or 'none'}; "
                               f"bundle {len(bundle)} bytes, {came})", fix=exc.fix) from None
    return signed, files
