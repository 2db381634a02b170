"""``federated-job``: run the site part of an approved, verified flow version on this site's
own Prefect (the site agent starts it; the flow run's version tag is the content hash).

The bundle was verified and installed by the agent under ``sites/NAME/bundles/<hash>/``. The
site part returns ``{"local": ..., "release": ...}``; both are written to the site's
``federation/jobs/<job>.json`` and stay at the site: only ``release`` goes on, to the egress gate.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from prefect import flow


def bundle_dir(site_root: Path, version_hash: str) -> Path:
    return site_root / "bundles" / version_hash.removeprefix("sha256:")


# Job parameters larger than this (a round's global model weights) go to the flow run as a
# file in the site's federation/jobs/, not as Prefect parameters (kept in Prefect's database
# and shown in its UI): the agent writes it, the run reads it.
PARAMS_INLINE_BYTES = 256 * 1024


def params_file(site_root: Path, job_id: str) -> Path:
    return site_root / "federation" / "jobs" / f"{job_id}.params.json"


def write_params(site_root: Path, job_id: str, params: dict[str, Any]) -> Path:
    """Keep a job's parameters at the site (owner-only) for its flow run to read."""
    path = params_file(site_root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(params, out)
    os.replace(tmp, path)
    return path


def _takes(function: Any, name: str) -> bool:
    """Whether ``function`` accepts the keyword ``name`` (by name or by ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


@flow(name="federated-job", persist_result=True)
def federated_job(job_id: str, version_hash: str, entrypoint: str,
                  params: dict[str, Any] | None = None, site: str | None = None,
                  params_in_file: bool = False, study: str | None = None) -> dict[str, str]:
    """Import the site part from its installed bundle and run it with the study's parameters.

    Args:
        job_id: the hub's job id.
        version_hash: the flow version (its bundle folder).
        entrypoint: ``file.py:function`` inside the bundle.
        params: the study's parameters.
        site: the site (default: RADFLOW_SITE).
        params_in_file: the parameters are too large for Prefect's database (a model's
            weights): read them from the job's file in the site's federation/jobs/.
        study: the hub's study id, passed on to a site part that takes ``study`` (one that
            keeps state between its rounds: a training set, a round key).
    """
    import faulthandler
    import signal

    from radflow.blocks import Site
    from radflow.errors import ConfigurationError

    # a site part that hangs can be asked where: `kill -USR1 PID` writes every thread's stack
    # to the run's stderr (the worker's log)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from radflow.runtime import site_name

    name = site_name(site)
    root = Path(Site.load(name).root)
    folder = bundle_dir(root, version_hash)
    file_name, _, function = entrypoint.partition(":")
    path = (folder / file_name).resolve()
    if folder.resolve() not in path.parents or not path.exists():
        raise ConfigurationError(f"the entrypoint {entrypoint} is not in bundle {version_hash}",
                                 fix="the agent installs the bundle before the run")
    if params_in_file:
        source = params_file(root, job_id)
        try:
            params = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"job {job_id}'s parameters are not readable at {source}: "
                                     f"{type(exc).__name__}",
                                     fix="the agent writes them when it starts the job: "
                                         "restart the agent (`radflow site up`)") from exc
    spec = importlib.util.spec_from_file_location(f"radflow_bundle_{job_id[:12]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    part = getattr(module, function)
    extra = {"study": study} if study and "study" not in (params or {}) \
        and _takes(part, "study") else {}
    out = part(**(params or {}), site=name, **extra)
    if not isinstance(out, dict) or "release" not in out:
        raise ConfigurationError("the site part returned no 'release'",
                                 fix="return {'local': ..., 'release': ...}")
    jobs = root / "federation" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    target = jobs / f"{job_id}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=str))
    os.replace(tmp, target)
    return {"job": job_id, "written": str(target)}
