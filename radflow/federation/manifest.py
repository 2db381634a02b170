"""One ``FlowVersion`` manifest says everything about a published flow version: its entrypoints,
the radflow and plugin versions it needs, its parameter and release schemas, resources, and the
hash of every source file in its bundle. It is hashed with radflow's canonical hashing
(:mod:`radflow.hashing`) and the hub signs that hash; a site checks the hash, the signature
against the hub key it pinned, every file, its own approval and its installed versions.

What a version needs is ``requires``: distribution -> a PEP 440 specifier (``radflow: ">=0.2"``),
checked at the site before anything runs (:func:`unmet_requirements`, refusal
``unsupported_version:<distribution>``) and by the hub against each site's fleet report before a
study starts. ``plugins`` (distribution -> the exact version) is what versions published before
``requires`` pin. A manifest with a field this radflow does not know is refused as a whole
(``extra="forbid"``): an older site cannot honour a rule it cannot read.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from radflow.federation.release import ReleaseSchema
from radflow.federation.signing import SignatureInvalid, sign, verify
from radflow.hashing import digest


class FlowVersion(BaseModel):
    """A flow version as published (all of it is covered by the hash)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the flow's name, e.g. federated-cohort-count")
    label: str = Field(default="", description="the publisher's version label")
    site_entrypoint: str = Field(description="the site part, path/to/file.py:function")
    coordinator_entrypoint: str | None = Field(default=None, description="the hub part")
    plugins: dict[str, str] = Field(default_factory=dict,
                                    description="distribution -> exact version it needs")
    requires: dict[str, str] = Field(default_factory=dict,
                                     description="distribution -> PEP 440 specifier it needs")
    parameter_schema: dict[str, Any] = Field(default_factory=dict)
    release_schema: ReleaseSchema
    resources: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict,
                                  description="bundle path -> sha256 hex of its bytes")
    publisher: str = ""

    @field_validator("requires")
    @classmethod
    def _specifiers(cls, value: dict[str, str]) -> dict[str, str]:
        for dist, spec in value.items():
            try:
                SpecifierSet(spec)
            except InvalidSpecifier:
                raise ValueError(f"requires: {dist}: {spec!r} is not a version specifier "
                                 f"(e.g. \">=0.2\" or \">=0.2,<1\")") from None
        return value

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


class Unmet(BaseModel):
    """A requirement a site does not meet: the distribution, what the version needs, what the
    site has (None: not installed)."""

    distribution: str
    needs: str
    has: str | None

    @property
    def refusal(self) -> str:
        return f"unsupported_version:{self.distribution}"

    @property
    def message(self) -> str:
        have = f"has {self.has}" if self.has else "does not have it"
        return f"needs {self.distribution}{self.needs} ({have})"

    @property
    def fix(self) -> str:
        return (f"upgrade it at the site: pip install '{self.distribution}{self.needs}', "
                f"then radflow site upgrade")


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version (name normalized as PEP 503 does)."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[normalize(name)] = dist.version
    return out


def normalize(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def unmet_requirements(manifest: FlowVersion,
                       have: dict[str, str] | None = None) -> list[Unmet]:
    """The requirements of ``manifest`` (``requires``) that ``have`` (distribution -> version;
    default: what is installed here) does not meet. A pre-release or local version counts as
    what it is (``0.2.0.dev1`` meets ``>=0.1``, not ``>=0.2``)."""
    have = {normalize(k): v for k, v in (installed_versions() if have is None else have).items()}
    unmet = []
    for dist, spec in sorted(manifest.requires.items()):
        version = have.get(normalize(dist))
        try:
            ok = version is not None and SpecifierSet(spec).contains(Version(version),
                                                                     prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            unmet.append(Unmet(distribution=dist, needs=spec, has=version))
    return unmet
