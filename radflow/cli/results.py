"""``radflow results``: the derived results of the site (SEG, SR...), their statuses and lineage."""

from __future__ import annotations

import getpass
import json
from typing import Any

import typer

from radflow.cli.common import JSON, SITE, console, emit_rows, print_json, site_catalog_url
from radflow.errors import ConfigurationError

app = typer.Typer(help="Derived results: list them, see their lineage, change their status.",
                  no_args_is_help=True)


def _row(r) -> dict:
    return {"id": r.id, "kind": r.kind.value, "status": r.status.value,
            "source_series_uid": r.source_series_uid, "algorithm": r.algorithm,
            "version": r.version, "params_hash": r.params_hash, "series_uid": r.series_uid,
            "orthanc_id": r.orthanc_id, "parent_id": r.parent_id,
            "derived_from_id": r.derived_from_id, "status_by": r.status_by,
            "status_reason": r.status_reason, "key": r.key, "updated_at": r.updated_at}


@app.command("list")
def list_(site: str | None = SITE,
          series: str | None = typer.Option(None, help="Only those made from this "
                                                       "SeriesInstanceUID."),
          kind: str | None = typer.Option(None, help="SEG, SR..."),
          status: str | None = typer.Option(None, help="draft, accepted, rejected, corrected, "
                                                       "superseded (filters the history: "
                                                       "implies --all)."),
          all_: bool = typer.Option(False, "--all", help="The whole history, every status (each "
                                                         "row says whether it is current)."),
          json_out: bool = JSON) -> None:
    """The current results (one per series, kind, algorithm and segment: corrected, then
    accepted, then draft), newest first; ``--all`` for the history with every status."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult
    from radflow.enums import ResultKind, ResultStatus
    from radflow.results import revisions
    from radflow.results.current import current_result_ids

    if kind:
        kind = _parse(ResultKind, kind.upper(), "kind")
    if status:
        status = _parse(ResultStatus, status.lower(), "status")
    history = all_ or status is not None
    query = select(DerivedResult).order_by(col(DerivedResult.id).desc())
    if series:
        query = query.where(DerivedResult.source_series_uid == series)
    if kind:
        query = query.where(DerivedResult.kind == kind)
    if status:
        query = query.where(DerivedResult.status == status)
    with session_scope(site_catalog_url(site)) as session:
        current = set(session.exec(current_result_ids([series] if series else None)).all())
        found = [r for r in session.exec(query) if history or r.id in current]
        titles = revisions.result_titles(found, {i: session.get(DerivedResult, i)
                                                 for i in revisions.parent_ids(found)})
        rows = [{**_row(r), "title": titles[r.id], "current": r.id in current} for r in found]
    emit_rows(rows, json_out, lambda r: f"{r['id']:>5} {r['kind']:<4} {r['status']:<10} "
              f"{r['title']}  from {r['source_series_uid']}"
              + ("  (current)" if history and r["current"] else ""))


def _parse(enum: type, value: str, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ConfigurationError(f"there is no result {what} {value!r}",
                                 fix=f"use one of {', '.join(e.value for e in enum)}") from None


@app.command()
def show(result_id: int, site: str | None = SITE, json_out: bool = JSON) -> None:
    """One result, with its lineage (the versions it corrects) and detail."""
    from radflow.catalog.db import session_scope
    from radflow.results import store

    with session_scope(site_catalog_url(site)) as session:
        row = store.get(session, result_id)
        data = {**_row(row), "inputs": json.loads(row.inputs),
                "detail": {k: v for k, v in json.loads(row.detail).items() if k != "thumbnail"},
                "lineage": [_row(r) for r in store.lineage(session, result_id)]}
    if json_out:
        print_json(data)
        return
    console.print_json(json.dumps(data, default=str))


@app.command("set-status")
def set_status(result_id: int, status: str = typer.Argument(..., help="accepted, rejected, "
                                                                      "corrected or superseded"),
               reason: str | None = typer.Option(None, help="Why (kept with the result)."),
               correction: int | None = typer.Option(None, help="For corrected: the result id "
                                                                "of the corrected version."),
               site: str | None = SITE, json_out: bool = JSON) -> None:
    """Change a result's status by hand (an admin's decision; clinicians decide on the
    worklist). The user running the command is recorded, and the change goes into the site's
    audit log."""
    from radflow.audit import record
    from radflow.catalog.db import session_scope
    from radflow.results import store

    actor = f"cli:{getpass.getuser()}"
    url = site_catalog_url(site)
    with session_scope(url) as session:
        current = store.get(session, result_id)
        before, key = current.status.value, current.key
        row = store.set_status(session, result_id, status, by=actor, reason=reason,
                               correction_id=correction)
        data = _row(row)
    record(url, actor=actor, action="result.status", subject=f"result:{key}",
           detail={"result": result_id, "from": before, "to": data["status"], "reason": reason,
                   "correction": correction})
    if json_out:
        print_json(data)
    else:
        console.print(f"result {result_id} is now {data['status']}", highlight=False)
