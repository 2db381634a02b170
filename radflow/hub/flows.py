"""The coordinator flow, run by the hub's worker: it queues one job per site for the newest
approved-for-publication version of a federated flow, follows the sites' releases and
refusals as they come in (each one a log line in the hub's Prefect UI), combines them, and
leaves the results as hub artifacts and as Prefect artifacts of the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE


@task(name="study-round", task_run_name="round {number}: {kind}", cache_policy=NO_CACHE,
      persist_result=False)
def study_round(number: int, kind: str, study: str,
                wait: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round ``number`` (from 1) of a study, as the hub's Prefect UI shows it: a task that ends
    when the round's sites have answered (or its deadline passed), with the round's table as
    its artifact."""
    from prefect.artifacts import create_table_artifact

    from radflow.hub.studies import round_summary

    entries = wait()
    summary = round_summary({"round": kind, "sites": entries})
    create_table_artifact(
        [{"site": site, "status": e["status"], "refusal": e.get("refusal", ""),
          "bytes": e["bytes"]} for site, e in sorted(summary["sites"].items())],
        key=f"study-{study}-round-{number}",
        description=f"round {number} ({kind}): each site's answer and the bytes it released")
    return entries


@flow(name="federated-study", log_prints=False, persist_result=False)
def federated_study(name: str, params: dict[str, Any] | None = None,
                    sites: list[str] | None = None, deadline_s: float = 600.0,
                    study_id: str | None = None, started_by: str | None = None) -> dict[str, Any]:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from radflow.hub import study_jobs
    from radflow.hub.home import HubHome
    from radflow.hub.studies import run_study
    from radflow.settings import get_settings

    logger = get_run_logger()
    home = HubHome.of(get_settings().home)  # the hub worker sets RADFLOW_HOME
    if study_id and study_jobs.study(home.engine(), study_id) is not None:
        from prefect.runtime import flow_run

        if any(tag.startswith("resume-of:") for tag in flow_run.tags):
            logger.info("study %s: resumed from the hub's records (its coordinator stopped "
                        "with the hub)", study_id)
        else:  # (radflow.hub.studies.launch queues a single-round study's jobs itself)
            logger.info("study %s: its jobs were queued when it was started; following them",
                        study_id)
    study_id = study_id or study_jobs.new_study_id()

    def each_round(number: int, round_params: dict[str, Any], wait) -> list[dict[str, Any]]:
        kind = str(round_params.get("round", "main")) + (
            f" {round_params['label']}" if round_params.get("label") else "")
        return study_round(number + 1, kind, study_id, wait)  # (counted from 1, as the page)

    result = run_study(home.engine(), home.root, name, params or {}, sites, deadline_s,
                       study_id=study_id, started_by=started_by, on_site=lambda s: logger.info(
                           "%s: %s", s["site"], s.get("refusal") or s["status"]),
                       each_round=each_round)
    rows = [{"site": s["site"], "status": s["status"], "refusal": s.get("refusal", ""),
             **{k: v for k, v in (s.get("release") or {}).items()
                if isinstance(v, int | float | str) or v is None}} for s in result["sites"]]
    create_table_artifact(rows, key=f"study-{result['study']}",
                          description=f"{name}: what each site released or why it refused")
    tables = {k: v for k, v in result["combined"].items()
              if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)}
    for key, table in tables.items():  # the result's tables (features, coefficients, ...)
        create_table_artifact(table, key=f"study-{result['study']}-{key.replace('_', '-')}",
                              description=f"{name}: {key.replace('_', ' ')}")
    combined = "\n".join(f"| {k} | {v} |" for k, v in result["combined"].items()
                         if k not in tables)
    create_markdown_artifact(f"# {name} ({result['study']})\n\nversion `{result['version']}`\n\n"
                             f"| | |\n|---|---|\n{combined}\n\nArtifacts: "
                             + ", ".join(f"`{a}`" for a in result["artifacts"]),
                             key=f"study-{result['study']}-summary")
    logger.info("study %s: %s", result["study"], result["combined"])
    return result
