"""One canonical way to hash what radflow versions: cohort definitions, parameters, result keys
and (phase 6) flow versions.

The canonical form is JSON with sorted keys, no whitespace and ASCII escapes, so the same value
hashes the same on every site and in every Python version.

Example:
    ```python
    from radflow.hashing import canonical_json, digest

    digest({"b": 1, "a": [1, 2]})          # 'sha256:...'
    canonical_json({"b": 1, "a": [1, 2]})  # '{"a":[1,2],"b":1}'
    ```
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    from radflow.errors import ConfigurationError

    raise ConfigurationError(f"cannot hash a {type(value).__name__} canonically: {value!r}",
                             fix="hash JSON values, enums, dates, paths or pydantic models")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value (sorted keys, compact, ASCII)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default)


def sha256_hex(value: Any) -> str:
    """The hex SHA-256 of the canonical JSON of ``value`` (bytes are hashed as they are)."""
    data = value if isinstance(value, bytes) else canonical_json(value).encode()
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>``: the content hash radflow shows and compares (cohorts, versions)."""
    return "sha256:" + sha256_hex(value)


def short_hash(value: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 (for names such as ``params-<12 hex>``)."""
    return sha256_hex(value)[:length]
