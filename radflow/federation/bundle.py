"""Flow packages and their bundles.

A flow package is a folder with ``radflow-flow.yaml`` (name, label, entrypoints, the radflow and
plugin versions it needs, its parameter and release schemas, resources) and its source files.
``requires:`` maps a distribution to a PEP 440 specifier (``radflow: ">=0.1"``), checked at each
site; the older ``plugins: [dist]`` pins a distribution to the exact version installed where it
is published (every site then needs that very version). ``build`` hashes every file
into the ``FlowVersion`` manifest, and packs the files into a deterministic tar (sorted, fixed
times and owners), so the same package gives the same bundle and the same content hash.
Prefect's own "bundles" (a pickled flow run plus the sender's pip freeze) are not used.
"""

from __future__ import annotations

import io
import tarfile
from importlib import metadata
from pathlib import Path

from radflow.errors import ConfigurationError
from radflow.federation.manifest import FlowVersion, file_hashes
from radflow.federation.release import ReleaseSchema

PACKAGE_FILE = "radflow-flow.yaml"
SOURCE_SUFFIXES = (".py", ".yaml", ".json", ".md", ".txt")
MAX_BUNDLE = 5 * 2**20


def read_package(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """The package's declaration and its files (path -> bytes).

    Raises:
        ConfigurationError: no declaration, an invalid one, or an oversized package.
    """
    import yaml

    spec_file = folder / PACKAGE_FILE
    if not spec_file.exists():
        raise ConfigurationError(f"{folder} has no {PACKAGE_FILE}",
                                 fix="publish a flow package folder (see federation/flows/)")
    try:
        spec = yaml.safe_load(spec_file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{spec_file} is not valid YAML: {exc}",
                                 fix="fix the file") from exc
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts}
    if sum(len(b) for b in files.values()) > MAX_BUNDLE:
        raise ConfigurationError(f"{folder} holds more than 5 MiB of sources",
                                 fix="a bundle holds code, not data or model weights")
    return spec, files


def build(folder: Path, publisher: str) -> tuple[FlowVersion, bytes]:
    """The manifest and the bundle (a tar) of a flow package."""
    spec, files = read_package(folder)
    plugins = {}
    for dist in spec.get("plugins", []):
        try:
            plugins[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError as exc:
            raise ConfigurationError(f"the flow needs {dist}, which is not installed here",
                                     fix=f"install {dist} where you publish") from exc
    requires = spec.get("requires") or {}
    if not isinstance(requires, dict) or not all(
            isinstance(v, str) and v.strip() for v in requires.values()):
        raise ConfigurationError(f"{folder / PACKAGE_FILE}: requires is a mapping of "
                                 f"distribution to version specifier",
                                 fix='e.g. requires: {radflow: ">=0.1", radflow-nnunet: ">=0.1"}')
    entry = str(spec.get("site_entrypoint", ""))
    if entry.split(":")[0] not in files:
        raise ConfigurationError(f"the site entrypoint {entry!r} is not a file of the package",
                                 fix="site_entrypoint: file.py:function")
    try:
        manifest = FlowVersion(
            name=spec["name"], label=str(spec.get("label", "")), site_entrypoint=entry,
            coordinator_entrypoint=spec.get("coordinator_entrypoint"), plugins=plugins,
            requires={str(k): v.strip() for k, v in requires.items()},
            parameter_schema=spec.get("parameter_schema", {}),
            release_schema=ReleaseSchema.model_validate(spec["release_schema"]),
            resources=spec.get("resources", {}), files=file_hashes(files), publisher=publisher)
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(f"{folder / PACKAGE_FILE} is not a valid flow package: "
                                 f"{str(exc).splitlines()[0]}",
                                 fix="see federation/flows/federated-cohort-count") from exc
    return manifest, pack(files)


def pack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def unpack(bundle: bytes) -> dict[str, bytes]:
    """The files of a bundle (regular files with plain relative paths only)."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith(("/", "..")) or ".." in \
                    Path(member.name).parts:
                raise ConfigurationError(f"the bundle holds {member.name!r}",
                                         fix="refuse it: bundles hold plain source files")
            files[member.name] = tar.extractfile(member).read()
    return files
