"""Export projects: what a de-identified export is for and how it is made. A project is a file
under the site's ``export/projects/`` (its options, the private attributes it calls safe, its
pixel rules) and a key beside it (32 random bytes, readable by the site's user only), from
which every pseudonym, date shift and UID of its exports is derived. The key never leaves the
site; without it nobody can link an exported pseudonym back to a patient."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError, NotFound
from radflow.export.deidentify import Deidentifier, PixelRule, parse_private
from radflow.export.profile import PROFILES, check_options

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass
class Project:
    name: str
    profile: str = "basic"
    options: list[str] = field(default_factory=list)
    safe_private: list[str] = field(default_factory=list)
    pixel_rules: list[dict[str, Any]] = field(default_factory=list)
    purpose: str = ""
    created_by: str = ""
    created_at: str = ""

    def deidentifier(self, root: Path) -> Deidentifier:
        return Deidentifier(key=read_key(root, self.name), options=tuple(self.options),
                            safe_private=tuple(self.safe_private),
                            pixel_rules=tuple(PixelRule.parse(r) for r in self.pixel_rules))


def projects_dir(root: Path) -> Path:
    return root / "export" / "projects"


def read_key(root: Path, name: str) -> bytes:
    path = projects_dir(root) / f"{name}.key"
    if not path.is_file():
        raise ConfigurationError(f"export project {name!r} has no key at {path}",
                                 fix="restore the key from the site's backup; without it the "
                                     "project's pseudonyms cannot be made again")
    return bytes.fromhex(path.read_text().strip())


def create(root: Path, name: str, *, profile: str = "basic", options: list[str] | None = None,
           safe_private: list[str] | None = None, pixel_rules: list[dict[str, Any]] | None = None,
           purpose: str = "", created_by: str = "") -> Project:
    """Make a project and its key.

    Raises:
        ConfigurationError: a bad name, profile, option, safe private attribute or pixel rule,
            or a project of that name exists.
    """
    if not NAME.fullmatch(name):
        raise ConfigurationError(f"export project name {name!r} is not valid",
                                 fix="use lower-case letters, digits and hyphens (e.g. reader-study)")
    if profile not in PROFILES:
        raise ConfigurationError(f"unknown profile {profile!r}", fix=f"use one of {list(PROFILES)}")
    for entry in safe_private or []:
        parse_private(entry)
    for rule in pixel_rules or []:
        PixelRule.parse(rule)
    folder = projects_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    if path.exists():
        raise ConfigurationError(f"export project {name!r} exists already",
                                 fix="choose another name, or use the project as it is")
    project = Project(name=name, profile=profile, options=list(check_options(options or [])),
                      safe_private=list(safe_private or []), pixel_rules=list(pixel_rules or []),
                      purpose=purpose, created_by=created_by,
                      created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    key_path = folder / f"{name}.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_bytes(32).hex() + "\n")
    path.write_text(json.dumps(asdict(project), indent=1) + "\n")
    return project


def load(root: Path, name: str) -> Project:
    path = projects_dir(root) / f"{name}.json"
    if not path.is_file():
        known = [p.stem for p in sorted(projects_dir(root).glob("*.json"))]
        raise NotFound(f"no export project {name!r} (projects: {known or 'none'})",
                       fix="make it with `radflow export project create NAME`")
    return Project(**json.loads(path.read_text()))


def listing(root: Path) -> list[Project]:
    return [load(root, p.stem) for p in sorted(projects_dir(root).glob("*.json"))]
