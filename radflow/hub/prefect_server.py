"""The hub's Prefect server: Prefect's own (`prefect server start`, in this process), after one
fix that makes its scheduler work with SQLAlchemy 2.1.

Prefect 3.8.8's scheduler inserts the scheduled runs of a deployment in one bulk ORM insert
whose rows carry a ``state`` key, which is a hybrid property of its ``FlowRun`` model (the
state rows are inserted after). SQLAlchemy 2.0 ignored that key; 2.1 hands it to the hybrid's
bulk-DML setter and, finding none, raises "Can't evaluate bulk DML statement; please supply a
bulk_dml decorated function": no scheduled run is ever made (measured: a `* * * * *` schedule,
the error every scheduler loop in prefect-server.log, no run). radflow needs SQLAlchemy 2.1 for
itself (``Select.into``), so the hub's server gives those hybrids a setter that leaves the key
alone, i.e. what 2.0 did. Only the hub runs scheduled deployments; a site's server is plain.

    python -m radflow.hub.prefect_server server start --host 127.0.0.1 --port 8710
"""

from __future__ import annotations

import runpy
import sys
from typing import Any


def _ignore(_cls: Any, _mapping: dict[str, Any], _value: Any) -> None:
    """A bulk INSERT's ``state`` value: inserted separately by Prefect, nothing to set."""


def patch() -> list[str]:
    """Give the runs' ``state`` hybrids a bulk-DML setter; returns the models patched."""
    from prefect.server.database import orm_models

    patched = []
    for model in (orm_models.FlowRun, orm_models.TaskRun):
        hybrid = model.__dict__.get("state")
        if hybrid is not None and getattr(hybrid, "bulk_dml_setter", "absent") is None:
            hybrid.bulk_dml_setter = _ignore
            patched.append(model.__name__)
    return patched


def main() -> None:
    patch()
    sys.argv = ["prefect", *sys.argv[1:]]
    runpy.run_module("prefect", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
