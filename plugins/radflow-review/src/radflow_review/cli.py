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
    """Decide a review (the reviewer is the user running the command): the decision is
    recorded with its audit event, the case run is resumed through the site's Prefect API, and
    the command waits until the run ends. A review decided already: exit 1, saying by whom and
    when."""
    from radflow.errors import ConfigurationError, RadflowError
    from radflow_review.decision import ReviewDecision
    from radflow_review.decisions import deliver, record_decision

    ctx = site_context(site)
    try:
        chosen = ReviewDecision(decision=decision, comment=comment,
                                reviewer=f"cli:{getpass.getuser()}",
                                corrected_seg_uid=corrected_seg_uid)
    except ValueError as exc:
        raise ConfigurationError(f"invalid decision: {exc.errors()[0]['msg']}",
                                 fix="accept, reject, or corrected --corrected-seg-uid UID") \
            from exc
    if decision == "expired":
        raise ConfigurationError("'expired' is what the review keeper decides at the due time",
                                 fix="accept, reject, or corrected --corrected-seg-uid UID")
    entry = record_decision(ctx.catalog_url, review_id, chosen)  # AlreadyDecided: exit 1
    run_id = entry.target
    api = ctx.prefect()
    try:
        resumed = deliver(ctx.catalog_url, entry, api).answer
    except RadflowError as exc:  # pending in the outbox: the review keeper resumes it
        resumed = f"pending ({exc.message}); the review keeper resumes it"
    run = api.wait(run_id, timeout=600)
    data = {"review": review_id, "decision": decision, "flow_run": run_id, "resume": resumed,
            "state": run.state, "ui": api.flow_run_ui(run_id)}
    if json_out:
        print_json(data)
    else:
        console.print(f"review {review_id}: {decision} recorded; the case run: {resumed}; it "
                      f"ended {run.state.lower()} ({data['ui']})", highlight=False)
    if not run.ok:
        raise typer.Exit(1)
