"""Log-in for the site's web app: OpenID Connect (authorization code + PKCE, state and nonce,
all by authlib), server-side sessions (:mod:`radflow.web.sessions`), roles from a configurable
claim, CSRF tokens.

Every page and API route depends on :func:`user` (or :func:`clinician`): without a session a
page redirects to the log-in and an API route answers 401; a session expires ``session_hours``
after its log-in, and logging out or an admin's revocation ends it at once. Roles are checked on
the server, per route; only the roles an app knows count (:data:`SITE_ROLES`), so a group of
another name at the provider grants nothing.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request

CLINICAL_ROLES = ("radiologist", "admin")
STEWARD_ROLES = ("data-steward", "admin")
SITE_ROLES = ("admin", "data-steward", "radiologist", "researcher")  # every role a site uses


@dataclass(frozen=True)
class User:
    """Who is logged in: the provider's subject, a display name, and roles."""

    sub: str
    name: str
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class LoginRequired(Exception):
    """No (valid) session: pages redirect to the log-in, API routes answer 401."""


def user(request: Request) -> User:
    """The logged-in user (a FastAPI dependency).

    Raises:
        LoginRequired: no session (none, expired, logged out or revoked: the store has no
            row for its cookie).
    """
    who = request.session.get("user")
    if not who:
        raise LoginRequired
    return User(who["sub"], who.get("name") or who["sub"], frozenset(who.get("roles", ())))


def either(names: Sequence[str], word: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``: names as a sentence says them."""
    names = list(names)
    return f"{', '.join(names[:-1])} {word} {names[-1]}" if len(names) > 1 else "".join(names)


def requiring(*roles: str):
    """A FastAPI dependency: the logged-in user if they have one of ``roles``, else 403 with
    the reason."""
    def dependency(request: Request) -> User:
        me = user(request)
        if not me.has(*roles):
            raise HTTPException(403, f"this page needs the {either(roles)} role; you have "
                                     f"{either(sorted(me.roles), 'and') or 'no role'}")
        return me
    return dependency


clinician = requiring(*CLINICAL_ROLES)  # radiologist or admin
steward = requiring(*STEWARD_ROLES)  # data-steward or admin


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); every form carries it."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse (403) a state-changing request whose CSRF token is missing or wrong."""
    expected = request.session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page "
                                 "and submit again")


def roles_from(claims: dict, claim: str, known: tuple[str, ...] | None = None) -> list[str]:
    """The roles in a token's claims (a list, or a space/comma separated string); a dotted
    claim name reaches into objects (Keycloak: ``realm_access.roles``). With ``known``, only
    those: a group named otherwise (one a user made, another app's) grants nothing."""
    value: object = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    found = {str(v) for v in value} if isinstance(value, list | tuple) else set()
    return sorted(found if known is None else found.intersection(known))


def local_path(target: str | None) -> str:
    """A redirect target after log-in: a path of this app only (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
