"""``radflow review``: the open review steps of a site, and deciding one from the command line
(an admin's route; clinicians decide on the worklist). The review plugin contributes this group
(entry point group ``radflow.cli``)."""

from __future__ import annotations

import getpass

import typer

from radflow.cli.common import JSON, SITE, console, emit_rows, print_json, site_context

app = typer.Typer(help="Review steps: the open ones, and deciding one.", no_args_is_help=True)


def _row(r) -> dict:
    return {"id": r.id, "status": r.status.value, "assignee": r.assignee,
            "series_uid": r.source_series_uid, "result_id": r.result_id,
            "flow_run_id": r.flow_run_id, "due_at": r.due_at, "decision": r.decision,
            "reviewer": r.reviewer, "comment": r.comment, "created_at": r.created_at}


@app.command("list")
def list_(site: str | None = SITE,
          all_: bool = typer.Option(False, "--all", help="Decided and expired ones too."),
          json_out: bool = JSON) -> None:
    """The open review steps (oldest first), with their case, assignee and due time."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus

    query = select(Review).order_by(col(Review.created_at))
    if not all_:
        query = query.where(Review.status == ReviewStatus.OPEN)
    with session_scope(site_context(site).catalog_url) as session:
        rows = [_row(r) for r in session.exec(query)]
    emit_rows(rows, json_out, lambda r: f"{r['id']:>4} {r['status']:<8} {r['assignee']:<20} "
              f"due {r['due_at']:%Y-%m-%d %H:%M}  series {r['series_uid']}  "
              f"{r['decision'] or ''}")


@app.command()
def decide(review_id: int = typer.Argument(..., help="The review's id (`radflow review list`)."),
           decision: str = typer.Argument(..., help="accept, reject or corrected"),
           comment: str = typer.Option("", help="Why (kept with the result)."),
           corrected_seg_uid: str | None = typer.Option(
               None, help="For corrected: the SeriesInstanceUID of the corrected SEG."),
           site: str | None = SITE, json_out: bool = JSON) -> None:
    """Decide a review: resumes its case run through the site's Prefect API (the reviewer is
    the user running the command)."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus
    from radflow.errors import ConfigurationError
    from radflow_review.decision import ReviewDecision

    ctx = site_context(site)
    with session_scope(ctx.catalog_url) as session:
        row = session.get(Review, review_id)
        if row is None or row.status != ReviewStatus.OPEN:
            raise ConfigurationError(f"there is no open review {review_id}",
                                     fix="see `radflow review list`")
        run_id = row.flow_run_id
    try:
        chosen = ReviewDecision(decision=decision, comment=comment,
                                reviewer=f"cli:{getpass.getuser()}",
                                corrected_seg_uid=corrected_seg_uid)
    except ValueError as exc:
        raise ConfigurationError(f"invalid decision: {exc.errors()[0]['msg']}",
                                 fix="accept, reject, or corrected --corrected-seg-uid UID") \
            from exc
    api = ctx.prefect()
    api.resume(run_id, chosen.model_dump(mode="json"))
    run = api.wait(run_id, timeout=600)
    data = {"review": review_id, "decision": decision, "flow_run": run_id, "state": run.state,
            "ui": api.flow_run_ui(run_id)}
    if json_out:
        print_json(data)
    else:
        console.print(f"review {review_id}: {decision}; the case run ended "
                      f"{run.state.lower()} ({data['ui']})", highlight=False)
    if not run.ok:
        raise typer.Exit(1)
