"""One ``FlowVersion`` manifest says everything about a published flow version: its entrypoints,
the plugin distributions and versions it needs, its parameter and release schemas, resources,
and the hash of every source file in its bundle. It is hashed with radflow's canonical hashing
(:mod:`radflow.hashing`) and the hub signs that hash; a site checks the hash, the signature
against the hub key it pinned, every file, its own approval and its installed plugins.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from radflow.federation.release import ReleaseSchema
from radflow.federation.signing import SignatureInvalid, sign, verify
from radflow.hashing import digest


class FlowVersion(BaseModel):
    """A flow version as published (all of it is covered by the hash)."""

    name: str = Field(description="the flow's name, e.g. federated-cohort-count")
    label: str = Field(default="", description="the publisher's version label")
    site_entrypoint: str = Field(description="the site part, path/to/file.py:function")
    coordinator_entrypoint: str | None = Field(default=None, description="the hub part")
    plugins: dict[str, str] = Field(default_factory=dict,
                                    description="distribution -> exact version it needs")
    parameter_schema: dict[str, Any] = Field(default_factory=dict)
    release_schema: ReleaseSchema
    resources: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict,
                                  description="bundle path -> sha256 hex of its bytes")
    publisher: str = ""

    def content_hash(self) -> str:
        return digest(self.model_dump(mode="json"))


class SignedVersion(BaseModel):
    """A manifest with its content hash and the hub's signature of that hash.

    The hash covers the manifest exactly as the hub published it (its JSON), not this
    radflow's parsing of it: a site whose models know a field the hub's did not (or the other
    way round) still verifies it. Read one from the wire with :meth:`from_wire`.
    """

    manifest: FlowVersion
    hash: str
    signature: str
    _published: dict[str, Any] | None = PrivateAttr(default=None)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SignedVersion:
        """A signed version as received: its hash is checked against the manifest's JSON."""
        signed = cls.model_validate(data)
        signed._published = data["manifest"]
        return signed

    def published_hash(self) -> str:
        """The hash of the manifest as published (as parsed, for one made here)."""
        if self._published is not None:
            return digest(self._published)
        return self.manifest.content_hash()


def sign_version(manifest: FlowVersion, hub_key: Any) -> SignedVersion:
    content = manifest.content_hash()
    return SignedVersion(manifest=manifest, hash=content, signature=sign(hub_key, content.encode()))


def file_hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}


def verify_version(signed: SignedVersion, hub_public_pem: bytes,
                   files: dict[str, bytes] | None = None) -> str:
    """Check a signed version and, if given, its bundle's files; returns the content hash.

    Raises:
        SignatureInvalid: the manifest does not hash to the signed hash, the signature does not
            verify against the pinned key, or a file is missing, extra or changed.
    """
    content = signed.published_hash()
    if content != signed.hash:
        raise SignatureInvalid("the manifest does not match its signed hash",
                               fix="refuse the bundle: it was changed after signing")
    verify(hub_public_pem, content.encode(), signed.signature)
    if files is not None and file_hashes(files) != signed.manifest.files:
        raise SignatureInvalid("the bundle's files do not match its signed manifest",
                               fix="refuse the bundle: a file was changed, added or removed")
    return content


def missing_plugins(manifest: FlowVersion) -> list[str]:
    """The refusal codes for required plugin distributions not installed at their exact
    versions (``missing_plugin:<name>@<version>``)."""
    missing = []
    for dist, version in sorted(manifest.plugins.items()):
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            missing.append(f"missing_plugin:{dist}@{version}")
    return missing
