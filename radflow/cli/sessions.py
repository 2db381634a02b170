"""``radflow site sessions`` and ``radflow hub sessions``: who is logged in to a web app, and
revoking a session (it ends at once; the next request with its cookie needs a new log-in).
Revocations are audited: at a site in its audit log, at the hub in ``hub/audit.jsonl``."""

from __future__ import annotations

import getpass
from typing import Any

import typer

from radflow.cli.common import JSON, SITE, emit_rows, report, site_context
from radflow.errors import ConfigurationError

site_app = typer.Typer(help="The site web app's sessions: list and revoke.",
                       no_args_is_help=True)
hub_app = typer.Typer(help="The coordinators' web app's sessions: list and revoke.",
                      no_args_is_help=True)
EVERYONE = typer.Option(False, "--all", help="Also log-ins in flight (no user yet).")
SESSION = typer.Argument(None, help="The session's id (see `sessions list`).")
USER = typer.Option(None, "--user", help="Revoke every session of this user (their subject).")


def _line(row: dict[str, Any]) -> str:
    return (f"{row['id']}  {row['user'] or '(logging in)':<24} {','.join(row['roles']):<24} "
            f"since {row['created_at'][:16]}  seen {row['last_seen_at'][:16]}  "
            f"{row['address'] or ''}")


def _revoke(store: Any, session_id: str | None, user: str | None) -> list[dict[str, Any]]:
    if bool(session_id) == bool(user):
        raise ConfigurationError("say which session to revoke",
                                 fix="give a session id, or --user SUBJECT for all of theirs")
    return store.revoke(session_id, sub=user)


def _site_store(ctx: Any) -> Any:
    from radflow.catalog.db import get_engine
    from radflow.catalog.models import WebSession
    from radflow.web.sessions import SessionStore

    return SessionStore(lambda: get_engine(ctx.catalog_url), WebSession)


def _hub() -> tuple[Any, Any]:
    from radflow.hub.home import HubHome
    from radflow.hub.models import HubWebSession
    from radflow.settings import get_settings
    from radflow.web.sessions import SessionStore

    home = HubHome.of(get_settings().home)
    if not home.config():
        raise ConfigurationError("there is no hub here yet", fix="run `radflow hub up` first")
    return home, SessionStore(home.engine, HubWebSession)


@site_app.command("list")
def site_list(site: str | None = SITE, everyone: bool = EVERYONE, json_out: bool = JSON) -> None:
    """The live sessions of the site's web app: id, user, roles, since, last seen, address."""
    emit_rows(_site_store(site_context(site)).sessions(everyone=everyone), json_out, _line)


@site_app.command("revoke")
def site_revoke(session_id: str | None = SESSION, user: str | None = USER,
                site: str | None = SITE, json_out: bool = JSON) -> None:
    """End a session (or all of a user's) at once; recorded in the site's audit log."""
    from radflow.audit import record

    ctx = site_context(site)
    gone = _revoke(_site_store(ctx), session_id, user)
    for row in gone:
        record(ctx.catalog_url, actor=f"cli:{getpass.getuser()}", action="web.session_revoked",
               subject=f"web:{ctx.name}", detail={"session": row["id"], "user": row["user"]})
    report(json_out, gone, "\n".join(f"revoked {_line(r)}" for r in gone))


@hub_app.command("list")
def hub_list(everyone: bool = EVERYONE, json_out: bool = JSON) -> None:
    """The live sessions of the coordinators' web app."""
    emit_rows(_hub()[1].sessions(everyone=everyone), json_out, _line)


@hub_app.command("revoke")
def hub_revoke(session_id: str | None = SESSION, user: str | None = USER,
               json_out: bool = JSON) -> None:
    """End a session (or all of a user's) at once; recorded in hub/audit.jsonl."""
    from radflow.hub.web import audit

    home, store = _hub()
    gone = _revoke(store, session_id, user)
    for row in gone:
        audit(home, f"cli:{getpass.getuser()}", "web.session_revoked",
              {"session": row["id"], "user": row["user"]})
    report(json_out, gone, "\n".join(f"revoked {_line(r)}" for r in gone))
