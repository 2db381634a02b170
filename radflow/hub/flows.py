"""The coordinator flow, run by the hub's worker: it queues one job per site for the newest
approved-for-publication version of a federated flow, follows the sites' releases and
refusals as they come in (each one a log line in the hub's Prefect UI), combines them, and
leaves the results as hub artifacts and as Prefect artifacts of the run."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger


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
        logger.info("study %s: resumed from the hub's records (its coordinator stopped with "
                    "the hub)", study_id)
    result = run_study(home.engine(), home.root, name, params or {}, sites, deadline_s,
                       study_id=study_id, started_by=started_by, on_site=lambda s: logger.info(
                           "%s: %s", s["site"], s.get("refusal") or s["status"]))
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
