"""The hub's site registry: enrolment codes, enrolment, tokens and revocation.

    code = add_site(engine, "uk-essen")           # printed once; only its hash is kept
    enrol(engine, "uk-essen", code, public_pem)   # the site's `radflow site join`
    token = issue_token(engine, assertion, token_url)   # private_key_jwt client credentials
    site = site_of(engine, "Bearer " + token)     # who calls; None when refused
    revoke_site(engine, "uk-essen")               # its tokens stop working at once
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from radflow.catalog.models.base import as_utc
from radflow.errors import ConfigurationError, RadflowError
from radflow.hub.models import (
    HubApiToken,
    HubSite,
    HubToken,
    HubVersion,
    UsedAssertion,
)

CODE_TTL = timedelta(hours=24)
TOKEN_TTL = timedelta(minutes=5)  # a site's access token; hub.json ``token_seconds`` or
# RADFLOW_HUB_TOKEN_SECONDS set another life (:func:`token_lifetime`)
ASSERTION_MAX = timedelta(minutes=5)
CLOCK_SKEW = timedelta(seconds=60)  # an assertion issued later than this in the future: refused
SITE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Refusal(RadflowError):
    """A request the hub refuses; ``code`` is what the caller is told (nothing more)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()



MIGRATIONS = Path(__file__).parent / "migrations"


def create(engine: Engine) -> str:
    """Create or upgrade the hub database (Alembic migrations; a database made by
    ``create_all`` before they existed is stamped as the baseline and upgraded in place)."""
    from radflow.catalog.migrate import upgrade

    return upgrade(engine, MIGRATIONS, legacy_table="hub_site", what="hub database")


def add_site(engine: Engine, name: str) -> str:
    """Register a site (or re-issue its code while it is pending); returns the one-time code.

    Raises:
        ConfigurationError: a bad name, or a site already enrolled.
    """
    if not SITE.match(name):
        raise ConfigurationError(f"site name {name!r} is not valid",
                                 fix="1-24 lower-case letters, digits and dashes")
    code = "-".join(secrets.token_hex(3) for _ in range(4))
    with Session(engine) as session:
        row = session.get(HubSite, name) or HubSite(name=name)
        if row.status == "enrolled":
            raise ConfigurationError(f"site {name!r} is enrolled already",
                                     fix=f"revoke it first (radflow hub site revoke {name})")
        row.status, row.code_hash = "pending", _hash(code)
        row.code_expires = datetime.now(UTC) + CODE_TTL
        session.add(row)
        session.commit()
    return code


def enrol(engine: Engine, name: str, code: str, public_key_pem: str) -> HubSite:
    """Enrol a site with its one-time code and its public key (the code then stops working).

    Raises:
        Refusal: ``bad_code`` (unknown site, wrong, used or expired code), ``bad_key``.
    """
    from radflow.federation.signing import fingerprint

    try:
        print_ = fingerprint(public_key_pem.encode())
    except (ValueError, TypeError) as exc:
        raise Refusal("bad_key", "the public key is not a PEM Ed25519 key") from exc
    with Session(engine) as session:
        row = session.get(HubSite, name)
        now = datetime.now(UTC)
        if row is None or row.status != "pending" or row.code_hash is None or \
                not hmac.compare_digest(row.code_hash, _hash(code)) or \
                as_utc(row.code_expires) < now:
            raise Refusal("bad_code", "the enrolment code is not valid for this site")
        row.status, row.code_hash, row.code_expires = "enrolled", None, None
        row.public_key_pem, row.fingerprint, row.enrolled_at = public_key_pem, print_, now
        session.add(row)
        session.commit()
        session.refresh(row)
        session.expunge(row)
        return row


def token_lifetime(home: Any = None) -> timedelta:
    """How long a site's access token lives: ``token_seconds`` in the hub's ``hub.json``, else
    the environment's ``RADFLOW_HUB_TOKEN_SECONDS``, else 5 minutes.

    Raises:
        ConfigurationError: the setting is not a whole number of seconds from 1 to 86400.
    """
    configured = home.config().get("token_seconds") if home is not None else None
    value = configured if configured is not None else \
        os.environ.get("RADFLOW_HUB_TOKEN_SECONDS")
    if value is None:
        return TOKEN_TTL
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    if not 1 <= seconds <= 86400:
        raise ConfigurationError(f"token_seconds {value!r} is not a token life in seconds",
                                 fix="set a whole number from 1 to 86400, e.g. 300 (the "
                                     "default: 5 minutes)")
    return timedelta(seconds=seconds)


def issue_token(engine: Engine, assertion: str, token_url: str,
                lifetime: timedelta = TOKEN_TTL) -> tuple[str, str, int]:
    """Client credentials with ``private_key_jwt``: check the site's signed assertion and
    return (access token, site, seconds it lives: ``lifetime``).

    Raises:
        Refusal: ``invalid_client`` for anything wrong (unknown or revoked site, bad signature,
            wrong audience, expired, too long-lived, issued more than a minute in the future,
            replayed).
    """
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import OKPKey

    def refuse(why: str) -> Refusal:
        return Refusal("invalid_client", f"client assertion refused: {why}")

    try:
        header_claims = _peek(assertion)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse("not a JWT") from exc
    name = header_claims.get("iss")
    with Session(engine) as session:
        row = session.get(HubSite, name) if isinstance(name, str) else None
        if row is None or row.status != "enrolled" or not row.public_key_pem:
            raise refuse("unknown or revoked site")
        key = OKPKey.import_key(row.public_key_pem.encode())
    try:
        claims = jwt.decode(assertion, key, algorithms=["Ed25519"]).claims
    except (JoseError, ValueError) as exc:
        raise refuse("bad signature") from exc
    now = datetime.now(UTC).timestamp()
    if claims.get("sub") != name or claims.get("aud") not in (token_url, [token_url]):
        raise refuse("wrong subject or audience")
    exp, iat, jti = claims.get("exp"), claims.get("iat", now), claims.get("jti")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp < now \
            or exp - iat > ASSERTION_MAX.total_seconds() or not isinstance(jti, str) or not jti:
        raise refuse("expired, too long-lived, or without jti")
    if iat > now + CLOCK_SKEW.total_seconds():
        raise refuse("issued in the future (check the site's clock)")
    token = secrets.token_urlsafe(32)
    with Session(engine) as session:
        if session.get(UsedAssertion, jti) is not None:
            raise refuse("replayed")
        session.exec(delete(UsedAssertion).where(UsedAssertion.expires_at < datetime.now(UTC)))
        session.exec(delete(HubToken).where(HubToken.expires_at < datetime.now(UTC)))
        session.add(UsedAssertion(jti=jti, expires_at=datetime.fromtimestamp(exp, UTC)))
        session.add(HubToken(token_hash=_hash(token), site=name,
                             expires_at=datetime.now(UTC) + lifetime))
        session.commit()
    return token, name, int(lifetime.total_seconds())


def _peek(assertion: str) -> dict:
    """The claims of a JWT before its signature is checked (only to find whose key checks it)."""
    import base64
    import json

    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWT")
    body = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
    claims = json.loads(body)
    if not isinstance(claims, dict):
        raise ValueError("claims are not an object")
    return claims


def site_of(engine: Engine, authorization: str | None) -> str | None:
    """The site a bearer token belongs to, or None (missing, unknown, expired, revoked)."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    with Session(engine) as session:
        row = session.get(HubToken, _hash(authorization.removeprefix("Bearer ").strip()))
        if row is None or as_utc(row.expires_at) < datetime.now(UTC):
            return None
        site = session.get(HubSite, row.site)
        return row.site if site is not None and site.status == "enrolled" else None


API_ROLES = ("coordinator", "admin")


def create_api_token(engine: Engine, name: str, role: str = "coordinator",
                     days: int = 90) -> tuple[str, str]:
    """A person's API token (shown once, kept hashed); returns (id, token).

    Raises:
        ConfigurationError: an unknown role, a bad name or lifetime.
    """
    if role not in API_ROLES:
        raise ConfigurationError(f"unknown role {role!r}", fix=f"one of {', '.join(API_ROLES)}")
    if not re.fullmatch(r"[\w.@-]{1,64}", name) or not 1 <= days <= 366:
        raise ConfigurationError(f"a token for {name!r} valid {days} days cannot be made",
                                 fix="name: letters, digits, . @ - _ (up to 64); 1 to 366 days")
    token_id = secrets.token_hex(4)
    token = f"rfh_{token_id}_{secrets.token_urlsafe(32)}"
    with Session(engine) as session:
        session.add(HubApiToken(id=token_id, token_hash=_hash(token), name=name, role=role,
                                expires_at=datetime.now(UTC) + timedelta(days=days)))
        session.commit()
    return token_id, token


def api_caller(engine: Engine, authorization: str | None) -> tuple[str, str] | None:
    """(name, role) of a valid API token, or None (missing, unknown, expired, revoked)."""
    if not authorization or not authorization.startswith("Bearer rfh_"):
        return None
    with Session(engine) as session:
        row = session.exec(select(HubApiToken).where(HubApiToken.token_hash == _hash(
            authorization.removeprefix("Bearer ").strip()))).first()
        if row is None or row.revoked_at is not None or \
                as_utc(row.expires_at) < datetime.now(UTC):
            return None
        return row.name, row.role


def api_tokens(engine: Engine) -> list[HubApiToken]:
    return detached(engine, select(HubApiToken).order_by(HubApiToken.created_at))


def revoke_api_token(engine: Engine, token_id: str) -> None:
    with Session(engine) as session:
        row = session.get(HubApiToken, token_id)
        if row is None:
            raise ConfigurationError(f"there is no API token {token_id!r}",
                                     fix="see radflow hub token list")
        row.revoked_at = datetime.now(UTC)
        session.add(row)
        session.commit()


def revoke_site(engine: Engine, name: str) -> None:
    """Cut a site off at once: its tokens are deleted and it can get no new one."""
    with Session(engine) as session:
        row = session.get(HubSite, name)
        if row is None:
            raise ConfigurationError(f"the hub has no site {name!r}",
                                     fix="see radflow hub site list")
        row.status, row.revoked_at, row.code_hash = "revoked", datetime.now(UTC), None
        session.add(row)
        session.exec(delete(HubToken).where(HubToken.site == name))
        session.commit()


def detached(engine: Engine, query: Any) -> list[Any]:
    """The rows of a query, usable after its session closed."""
    with Session(engine) as session:
        rows = list(session.exec(query))
        for r in rows:
            session.expunge(r)
        return rows


def sites(engine: Engine) -> list[HubSite]:
    return detached(engine, select(HubSite).order_by(HubSite.name))


def public_keys(engine: Engine, names: list[str]) -> dict[str, str]:
    """The enrolled Ed25519 public keys (PEM) of the named sites that have one."""
    return {site.name: site.public_key_pem for site in sites(engine)
            if site.name in names and site.public_key_pem}


def publish(engine: Engine, signed: Any, bundle: bytes) -> bool:
    """Keep a signed version and its bundle; False when that hash was published before."""
    with Session(engine) as session:
        if session.get(HubVersion, signed.hash) is not None:
            return False
        session.add(HubVersion(hash=signed.hash, name=signed.manifest.name,
                               label=signed.manifest.label, signed=signed.model_dump_json(),
                               bundle=bundle, publisher=signed.manifest.publisher))
        session.commit()
    return True


def versions(engine: Engine) -> list[HubVersion]:
    return detached(engine, select(HubVersion).order_by(HubVersion.published_at))
