"""Run one case flow per series under a concurrency limit: a sliding window, each next case
started as soon as one finishes (never waiting for a whole chunk).

* ``inline``: each case is a subflow run inside a task of this flow run (threads of this
  process): the model is loaded once and shared.
* ``runs``: each case is its own flow run of the ``segment-and-quantify-case`` deployment, on
  the site's work pool: it can suspend on its own (review steps), and survives this process. A
  case that suspends for review counts as done here (its slot goes to the next case, and this
  run ends without waiting for the reviews); its row says ``awaiting review``.
* ``dask``: each case is a subflow run inside a task on a Dask cluster (prefect-dask): a
  ``LocalCluster`` of ``max_parallel`` worker processes on this machine (one thread each; each
  process loads its own model), or the scheduler at ``dask_address`` (its workers need radflow,
  the plugins and the site's RADFLOW_HOME).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from radflow.errors import ConfigurationError
from radflow.plugins import deployment_name
from radflow.tasks.pipeline_report import failed_row
from radflow.types import SeriesRef

ISOLATIONS = ("inline", "runs", "dask")
POLL_SECONDS = 0.5


@task(name="case", task_run_name="case-{series.orthanc_id}", cache_policy=NO_CACHE)
def inline_case(case_flow: Any, series: SeriesRef, options: dict[str, Any]) -> dict[str, Any]:
    """One case as a subflow of this run."""
    state = case_flow(series=series, **options, return_state=True)
    return _row(state, series)


def _row(state: Any, series: SeriesRef) -> dict[str, Any]:
    try:
        row = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 (the result could not be read back: use the state)
        row = exc
    if isinstance(row, dict):
        return row
    reason = state.message or state.type.value
    return failed_row(series, reason.split("\n")[0][:300])


def run_cases(case_flow: Any, refs: list[SeriesRef], options: dict[str, Any], *,
              max_parallel: int, isolation: str, site: str,
              dask_address: str | None = None) -> list[dict[str, Any]]:
    """Run the case flow for every series, at most ``max_parallel`` at a time; returns one row
    per case, in the order of ``refs``.

    Raises:
        ConfigurationError: an unknown isolation, or ``max_parallel`` below 1.
    """
    if isolation not in ISOLATIONS:
        raise ConfigurationError(f"isolation {isolation!r} is not one of {', '.join(ISOLATIONS)}",
                                 fix="use 'inline' (fast, shared model), 'runs' (review steps) "
                                     "or 'dask' (a Dask cluster)")
    if max_parallel < 1:
        raise ConfigurationError(f"max_parallel must be at least 1, got {max_parallel}",
                                 fix="e.g. max_parallel=2 on a two-core machine")
    if isolation == "inline":
        return _inline(case_flow, refs, options, max_parallel)
    if isolation == "dask":
        return _on_dask(case_flow, refs, options, max_parallel, dask_address)
    return _runs(case_flow, refs, options, max_parallel, site)


def _inline(case_flow: Any, refs: list[SeriesRef], options: dict[str, Any],
            limit: int) -> list[dict[str, Any]]:
    """Each case a task of the current flow run, on its task runner."""
    submit = lambda ref: inline_case.submit(case_flow, ref, options)  # noqa: E731
    done = lambda f: f.state.is_final()  # noqa: E731
    again: set[str] = set()

    def collect(future: Any, ref: SeriesRef) -> dict[str, Any] | Again:
        if future.state.is_crashed() and ref.orthanc_id not in again:
            # measured: when the site's worker is killed, the case running in its flow-run
            # process is aborted (SystemExit) while the fan-out goes on; once more, in its
            # slot, reusing what the first attempt stored
            get_run_logger().warning("case %s crashed (%s); running it again",
                                     ref.series_uid, future.state.message)
            again.add(ref.orthanc_id)
            return Again(submit(ref))
        if future.state.is_completed():
            return future.result()
        return failed_row(ref, future.state.message or "failed")

    return _window(refs, limit, submit, done, collect)


def _on_dask(case_flow: Any, refs: list[SeriesRef], options: dict[str, Any], limit: int,
             address: str | None) -> list[dict[str, Any]]:
    """The cases as tasks of a subflow whose task runner is Dask's."""
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    if address:
        runner = DaskTaskRunner(address=address)
    else:  # loopback only, no dashboard; a process per case in flight
        runner = DaskTaskRunner(cluster_kwargs={
            "n_workers": limit, "threads_per_worker": 1, "processes": True,
            "host": "127.0.0.1", "dashboard_address": None})

    @flow(name="cases-on-dask", task_runner=runner, log_prints=False)
    def cases_on_dask() -> list[dict[str, Any]]:
        return _inline(case_flow, refs, options, limit)

    return cases_on_dask()


@dataclass(frozen=True)
class Again:
    """What ``collect`` returns to run a case once more: the new run's handle, which keeps the
    case's slot while the other slots go on."""

    handle: Any


def _window(refs: list[SeriesRef], limit: int, submit: Callable, done: Callable,
            collect: Callable[[Any, SeriesRef], dict[str, Any] | Again]) -> list[dict]:
    """Keep ``limit`` cases running; ``collect`` turns a finished handle into the case's row
    (or :class:`Again`). Rows come back in the order of ``refs``."""
    rows: dict[int, dict[str, Any]] = {}
    waiting = list(enumerate(refs))
    running: dict[int, Any] = {}
    while waiting or running:
        while waiting and len(running) < limit:
            index, ref = waiting.pop(0)
            running[index] = submit(ref)
        finished = [i for i, handle in running.items() if done(handle)]
        for index in finished:
            outcome = collect(running.pop(index), refs[index])
            if isinstance(outcome, Again):
                running[index] = outcome.handle
            else:
                rows[index] = outcome
        if not finished:
            time.sleep(POLL_SECONDS)
    return [rows[i] for i in range(len(refs))]


def _runs(case_flow: Any, refs: list[SeriesRef], options: dict[str, Any], limit: int,
          site: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    name = deployment_name(case_flow.name, site)
    logger = get_run_logger()
    parent = f"fan-out:{flow_run.get_id()}"
    with get_client(sync_client=True) as client:
        def submit(ref: SeriesRef) -> Any:
            # not a subflow: Prefect cannot suspend a subflow, and a case must be able to wait
            # for its review on its own; the tag links it to this run
            run = run_deployment(name, parameters={"series": ref, **options}, timeout=0,
                                 as_subflow=False, tags=["radflow", "case", parent])
            logger.info("case %s: flow run %s", ref.series_uid, run.name)
            return run.id

        def done(run_id: Any) -> bool:
            state = client.read_flow_run(run_id).state
            return state.is_final() or state.is_paused()

        def collect(run_id: Any, ref: SeriesRef) -> dict[str, Any]:
            state = client.read_flow_run(run_id).state
            if state.is_paused():
                row = failed_row(ref, f"flow run {run_id}")
                row["status"] = "awaiting review"
                return row
            return _row(state, ref)

        return _window(refs, limit, submit, done, collect)
