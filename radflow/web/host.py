"""What the web app needs from whoever serves it: a site's worklist or the hub's coordinator
pages. Both log people in the same way (OpenID Connect through authlib, server-side sessions,
roles from a claim, CSRF tokens); they differ in their provider, secrets, pages, roles, session
table and audit log.

    from radflow.web.app import create_web_app
    app = create_web_app(site_host(ctx))       # or radflow.hub.web.hub_host(home)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radflow.web import WebPages
from radflow.web.sessions import SessionStore

if TYPE_CHECKING:
    from radflow.site.context import SiteContext

Audit = Callable[[str, str, dict[str, Any]], None]  # (actor, action, detail)


@dataclass(frozen=True)
class WebHost:
    """One web app's settings.

    Attributes:
        name: shown in the header and the title ("alpha", "hub").
        cookie: the session cookie's name (one per site and one for the hub, so a session of
            one means nothing to another); it holds only the session's random token.
        url: the app's address as browsers reach it (its OIDC redirect URIs start with it).
        issuer: the OpenID provider it trusts.
        client_id, client_secret: its client at that provider.
        sessions: where the sessions live (the site catalog's or the hub database's table).
        session_hours: how long a log-in lasts.
        roles_claim: the claim (dotted for nested) that holds the roles.
        roles: the roles this app knows; a group or role of another name grants nothing.
        pages: the pages it serves (routers, templates, navigation).
        audit: records log-ins and log-outs (and whatever the pages record).
        state: more ``app.state`` attributes for the pages (a site's ``ctx``, the hub's
            ``home``).
        no_role_hint: what the home page tells a user whose roles give no page.
    """

    name: str
    cookie: str
    url: str
    issuer: str
    client_id: str
    client_secret: str
    sessions: SessionStore
    session_hours: float
    roles_claim: str
    roles: tuple[str, ...]
    pages: tuple[WebPages, ...]
    audit: Audit
    state: dict[str, Any] = field(default_factory=dict)
    no_role_hint: str = "Ask the admin for the role you need."


def site_host(ctx: SiteContext, pages: tuple[WebPages, ...]) -> WebHost:
    """The site's worklist: its embedded (or configured) provider, its secrets, its audit log."""
    from radflow.catalog.db import get_engine
    from radflow.catalog.models import WebSession
    from radflow.errors import ConfigurationError
    from radflow.web.auth import SITE_ROLES
    from radflow.web.idp import issuer, web_url

    if ctx.secrets.web_session_key is None or ctx.secrets.oidc_client_secret is None:
        raise ConfigurationError(f"site {ctx.name!r} has no web app secrets yet",
                                 fix=f"run `radflow site up --site {ctx.name}` once")

    def audit(actor: str, action: str, detail: dict[str, Any]) -> None:
        from radflow.audit import record

        record(ctx.catalog_url, actor=actor, action=action, subject=f"web:{ctx.name}",
               detail=detail)

    return WebHost(
        name=ctx.name, cookie=f"radflow_{ctx.name.replace('-', '_')}", url=web_url(ctx),
        issuer=issuer(ctx), client_id=ctx.config.oidc.client_id,
        client_secret=ctx.secrets.oidc_client_secret.get_secret_value(),
        sessions=SessionStore(lambda: get_engine(ctx.catalog_url), WebSession),
        session_hours=ctx.config.oidc.session_hours, roles_claim=ctx.config.oidc.roles_claim,
        roles=SITE_ROLES, pages=pages, audit=audit, state={"ctx": ctx},
        no_role_hint="Ask the site's admin for the role you need (radiologist for reviews).")
