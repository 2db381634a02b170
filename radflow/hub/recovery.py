"""A study outlives the hub's processes.

A study is coordinated by one flow run of ``federated-study/NAME`` on the hub's Prefect. While it
runs, that run holds the study's lock (``run/studies/<id>.lock``, an ``flock`` the kernel lets go
of when its process dies, however it dies). Everything the coordinator decides is in the hub
database before it acts on it (the study and its first round in one transaction, each later
round's jobs in one transaction, each site's answer as it comes), so a coordinator run again with
the same study id goes on from there (:func:`radflow.hub.studies.run_study`).

When the hub's processes die (the machine, the OOM killer, SIGKILL), the hub's Prefect server is
left believing that the coordinator runs: nothing marks it crashed. `radflow hub up` therefore
calls :func:`resume_studies` before it starts the worker: a study whose newest coordinator run is
pending or running while nothing holds the study's lock and no worker runs (or whose newest run
crashed) gets a new run of its deployment with the same parameters, tagged ``study:<id>``,
``resume-of:<first run>`` and ``attempt:<n>`` (at most :data:`MAX_RESUMES` per study), and the
old run is marked CRASHED with a message naming the new one.

    with coordinating(hub_root, study_id):      # StudyBusy if another process coordinates it
        ...
    resume_studies(home, worker_running=False)  # ["study 3f2a...: resumed as flow run ..."]
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from radflow.errors import FederationError, RadflowError

COORDINATOR = "federated-study"  # the coordinator flow's name on the hub's Prefect
MAX_RESUMES = 3  # new coordinator runs per study after crashes
ORPHANED = ("PENDING", "RUNNING")  # states a dead coordinator leaves its run in


class StudyBusy(FederationError):
    """Another live process coordinates this study."""


def lock_path(hub_root: Path, study_id: str) -> Path:
    if not study_id.isalnum():
        raise FederationError(f"{study_id!r} is not a study id",
                              fix="see radflow study list")
    return hub_root / "run" / "studies" / f"{study_id}.lock"


@contextmanager
def coordinating(hub_root: Path, study_id: str, patience: float = 1.0) -> Iterator[None]:
    """Hold the study's lock while its coordinator runs. A lock held for less than
    ``patience`` seconds (:func:`coordinated` looking) is waited for; a coordinator holds it
    for its whole run.

    Raises:
        StudyBusy: another live process holds it.
    """
    path = lock_path(hub_root, study_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + patience
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StudyBusy(f"study {study_id} is coordinated by another live process",
                                    fix=f"wait for it: radflow study show {study_id}") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def coordinated(hub_root: Path, study_id: str) -> bool:
    """Whether a live process coordinates the study now."""
    try:
        with coordinating(hub_root, study_id, patience=0.0):
            return False
    except StudyBusy:
        return True


def resume_studies(home: Any, worker_running: bool) -> list[str]:
    """Run the coordinator of each study again whose coordinator died with the hub (see the
    module's doc); returns one line per study it resumed or gave up on. ``worker_running``: a
    worker is up (then a pending or running coordinator is its, alive; only crashed ones are
    run again). Studies with a result are finished whatever Prefect says."""
    api = home.prefect()
    said = []
    for run in api.flow_runs_of(COORDINATOR, ("CRASHED", *ORPHANED)):
        study_id = str(run.parameters.get("study_id") or "")
        if not study_id.isalnum() or (home.root / "studies" / study_id / "result.json").exists():
            continue
        newest = api.flow_runs_tagged(f"study:{study_id}", limit=1)
        if not newest or newest[0].id != run.id or run.deployment_id is None:
            continue  # resumed already, or not a deployment's run
        if run.state in ORPHANED and (worker_running or coordinated(home.root, study_id)):
            continue  # its process lives on
        first = next((t.split(":", 1)[1] for t in run.tags if t.startswith("resume-of:")),
                     run.id)
        attempt = 1 + next((int(t.split(":", 1)[1]) for t in run.tags
                            if t.startswith("attempt:")), 0)
        if attempt > MAX_RESUMES:
            said.append(f"study {study_id}: its coordinator crashed {attempt} times; not "
                        f"resumed again (see flow run {run.name})")
            continue
        tags = (*[t for t in run.tags if not t.startswith(("resume-of:", "attempt:"))],
                f"resume-of:{first}", f"attempt:{attempt}")
        again = api.rerun(run, tags, idempotency_key=f"resume-{first}-{attempt}")
        if run.state in ORPHANED:
            api.set_state(run.id, "CRASHED", f"the hub stopped while this run coordinated "
                                             f"study {study_id}; resumed as flow run "
                                             f"{again.name} ({again.id})")
        said.append(f"study {study_id}: its coordinator ({run.name}, {run.state.lower()}) is "
                    f"resumed as flow run {again.name}")
    return said


def resume_quietly(home: Any, worker_running: bool) -> list[str]:
    """:func:`resume_studies`, its failure a line of the answer (`hub up` goes on)."""
    try:
        return resume_studies(home, worker_running)
    except RadflowError as exc:
        return [f"studies not resumed: {exc.message}"]
