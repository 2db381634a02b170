"""The coordinator part of a federated flow: what the hub does between rounds. A flow whose
``radflow-flow.yaml`` names a ``coordinator_entrypoint`` (``coordinator.py``) runs in rounds;
one without runs one round and is combined by :func:`radflow.hub.studies.combine`.

A coordinator module defines:

    def first_round(params) -> dict
        the parameters of round 0, over the study's (they name the round: ``{"round": ...}``)
    def next_round(params, rounds) -> dict | None
        the next round's parameters, or None when the study is done
    def combine(params, rounds) -> dict
        the study's combined result (JSON)
    def charts(result, rounds, folder) -> list[str]          (optional)
        PNG files written into ``folder``; the study report shows them

``rounds`` is every round so far: ``{"round": name, "params": {...}, "sites": [{"site",
"status": "released"|"refused"|"invalid_release"|"missing", "release" or "refusal"}]}``. Only
the sites that released in a round are asked in the next one; the others are reported with
their code. A release the hub has is one its inbox checked against the round's release schema
(:mod:`radflow.hub.inbox`): exactly the declared fields, kinds and shapes, finite numbers, and
``None`` only where the site's gate suppresses; a coordinator can rely on that and on nothing
more (any mix of released, refused, invalid and missing sites, including none released).

The hub runs the coordinator part from the bundle it published (extracted under
``hub/bundles/<hash>/``), on its own worker: it never reaches a site.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy.engine import Engine


class SingleRound:
    """The coordinator of a flow without one: one round, combined by the hub's own rules."""

    def __init__(self, name: str) -> None:
        self.name = name

    def first_round(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def next_round(self, params: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
        return None

    def combine(self, params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
        from radflow.hub.studies import combine

        return combine(self.name, rounds[-1]["sites"])


def coordinator_for(engine: Engine, hub_root: Path, version_hash: str) -> Any:
    """The coordinator part of a published version (a module), or :class:`SingleRound`."""
    import json

    from sqlmodel import Session

    from radflow.errors import ConfigurationError
    from radflow.federation.bundle import unpack
    from radflow.hub.models import HubVersion

    with Session(engine) as session:
        row = session.get(HubVersion, version_hash)
        if row is None:
            raise ConfigurationError(f"no published version {version_hash}",
                                     fix="publish its flow package on the hub "
                                         "(`radflow publish PATH`)")
        manifest = json.loads(row.signed)["manifest"]
        bundle = row.bundle
    entrypoint = manifest.get("coordinator_entrypoint")
    if not entrypoint:
        return SingleRound(manifest["name"])
    folder = hub_root / "bundles" / version_hash.removeprefix("sha256:")
    for rel, data in unpack(bundle).items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    file_name, _, _ = entrypoint.partition(":")
    path = (folder / file_name).resolve()
    if folder.resolve() not in path.parents or not path.exists():
        raise ConfigurationError(f"the coordinator entrypoint {entrypoint} is not in the bundle",
                                 fix="name a file of the flow package")
    spec = importlib.util.spec_from_file_location(
        f"radflow_coordinator_{version_hash[7:19]}", path)
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for needed in ("first_round", "next_round", "combine"):
        if not callable(getattr(module, needed, None)):
            raise ConfigurationError(f"the coordinator part {entrypoint} has no {needed}()",
                                     fix="see radflow.hub.coordinator for what it defines")
    return module
