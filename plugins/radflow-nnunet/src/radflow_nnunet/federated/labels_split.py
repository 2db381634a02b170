"""Pseudonymous case ids, the seeded train/held-out split, and its record at the site.

Case ids: ``case_`` and 12 hex digits of HMAC-SHA256(the site's case-id key, the series UID).
The key (``<site folder>/training/case-id.key``, owner-only, made on first use) never leaves the
site, so a case id cannot be traced back to a series by anyone who only knows UIDs, and the
same series keeps its id from one study to the next.

The split is by hash, not by shuffling: a case is held out when
``sha256(seed, case id)`` read as a number in [0, 1) is below the held-out fraction. A case's
side depends on itself and the seed only, so when the cohort grows (more reviewed cases), no
case already assigned changes side, and the held-out sets of two studies with the same seed
agree. The fraction is met on average, not exactly; so that a small site still validates and
trains, a cohort of two or more cases where the hash holds out none (all) holds out its lowest-
(trains its highest-) scoring case: only there can a case change side when the cohort grows.

The record (``<site folder>/studies/<study>/training-split.json``) says which case went where,
with the seed, the fraction, the cohort's hash, the skipped cases and why, and each case id's
series (for the site's steward): it stays at the site, never in a release.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RULE = "held out when sha256(seed, case id) in [0, 1) < fraction; at least one case each side"


def case_id_key(site_folder: Path) -> bytes:
    """The site's case-id key (32 random bytes, owner-only file), made on first use."""
    path = site_folder / "training" / "case-id.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def case_id(key: bytes, series_uid: str) -> str:
    """The pseudonymous id of a series' case (stable, not traceable without the key)."""
    return "case_" + hmac.new(key, series_uid.encode(), hashlib.sha256).hexdigest()[:12]


def score(seed: int, case: str) -> float:
    """A case's place in [0, 1) for a seed (sha256: the same on every machine and Python)."""
    value = hashlib.sha256(f"{int(seed)}\x1f{case}".encode()).digest()[:8]
    return int.from_bytes(value, "big") / 2.0 ** 64


def check_fraction(fraction: float) -> float:
    """The held-out fraction, checked.

    Raises:
        ConfigurationError: it is not in [0, 1).
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ConfigurationError(f"the held-out fraction must be in [0, 1), got {fraction}",
                                 fix="e.g. --param held_out_fraction=0.2")
    return float(fraction)


def split_cases(cases: Iterable[str], seed: int, fraction: float) -> tuple[list[str], list[str]]:
    """(train, held out) case ids, each sorted (see the module's docstring for the rule)."""
    fraction = check_fraction(fraction)
    scores = {case: score(seed, case) for case in set(cases)}
    held = {case for case, s in scores.items() if s < fraction}
    if fraction > 0 and len(scores) >= 2:
        if not held:
            held = {min(scores, key=scores.__getitem__)}
        elif len(held) == len(scores):
            held.discard(max(scores, key=scores.__getitem__))
    return sorted(set(scores) - held), sorted(held)


def split_record_path(site_folder: Path, study: str) -> Path:
    """Where a study's split is recorded at the site.

    Raises:
        ConfigurationError: the study name is not a plain name (it becomes a folder).
    """
    if not STUDY_NAME.match(study or ""):
        raise ConfigurationError(f"study {study!r} cannot name a folder",
                                 fix="use letters, digits, '.', '_' and '-' (at most 128)")
    return site_folder / "studies" / study / "training-split.json"


def write_split_record(path: Path, record: dict[str, Any]) -> Path:
    """Write the record (owner-only, replaced as a whole: a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**record, "rule": RULE, "made_at": datetime.now(UTC).isoformat(timespec="seconds")}
    partial = path.with_suffix(".json.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(body, indent=2, sort_keys=True))
    os.replace(partial, path)
    return path
