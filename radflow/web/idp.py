"""The site's embedded OpenID provider: canaille, a real OpenID Connect provider with its own
login page, user store (SQLite in the site folder, passwords hashed with PBKDF2-SHA512) and
groups, which radflow uses as roles.

Why canaille (and not node's ``oidc-provider``): it is a whole provider, not a library. It has the
login page, the user and group store, password hashing, logout (``end_session``) and an admin UI
built in, where ``oidc-provider`` leaves accounts and the login interaction to the host program
(its own are for development only). It installs from PyPI into the site's virtual environment, so
a site needs no node runtime and no npm install.

On first start the component seeds it with the site's web app as a confidential client (code
flow, PKCE, redirect to the web app only) and the demo users of :data:`DEMO_USERS`, whose
generated passwords are in the site's ``secrets.json`` (``radflow site credentials``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import requests

from radflow.errors import SiteError
from radflow.site.components import Component
from radflow.site.config import DEMO_USERS
from radflow.site.context import SiteContext


def idp_dir(ctx: SiteContext) -> Path:
    return ctx.paths.root / "idp"


def issuer(ctx: SiteContext) -> str:
    """The issuer the site's web app trusts: the configured one, else the embedded provider."""
    if ctx.config.oidc.issuer:
        return ctx.config.oidc.issuer.rstrip("/")
    return f"http://127.0.0.1:{ctx.config.ports.idp}"


def web_url(ctx: SiteContext) -> str:
    """The web app's address as browsers reach it (its OIDC redirect URIs start with it)."""
    if ctx.config.oidc.public_url:
        return ctx.config.oidc.public_url.rstrip("/")
    return f"http://127.0.0.1:{ctx.config.ports.worklist}"


# Who may do what in canaille (its defaults let every user create groups, and groups are
# radflow's roles: anyone could make a group "admin" and join it). Users log in and edit their
# own profile; only members of the group "admin" manage users, groups and clients.
ACL = [
    "[CANAILLE.ACL.DEFAULT]",
    'PERMISSIONS = ["edit_self", "use_oidc"]',
    "[CANAILLE.ACL.ADMIN]",
    'PERMISSIONS = ["manage_users", "manage_all_groups", "manage_oidc", "delete_account"]',
    'WRITE = ["groups", "lock_date"]',
    'FILTER = [{groups = "admin"}]',
]


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _toml_value(value: object) -> str:
    return json.dumps(value)  # a JSON string or list of strings is valid TOML


@dataclass(frozen=True)
class Canaille:
    """One embedded canaille: its folder, port and title, the one confidential client it serves
    (a web app, by its URL), and its users (name -> password, roles). The site's ``idp``
    component and the hub's ``idp`` process are both one of these."""

    folder: Path
    port: int
    title: str
    secret_key: str
    client_id: str
    client_secret: str
    app_url: str
    users: dict[str, tuple[str, tuple[str, ...]]]
    env: dict[str, str]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.folder / "canaille.toml"

    def prepare(self) -> None:
        """Write its configuration (0600) and, once, seed the client, groups and users."""
        folder = self.folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = folder / "jwks.json"
        if not keys.exists():
            from joserfc.jwk import RSAKey

            key = RSAKey.generate_key(2048, private=True)
            _write_private(keys, json.dumps(key.as_dict(private=True) | {"kid": uuid.uuid4().hex}))
        jwk = json.loads(keys.read_text())
        inline = ", ".join(f"{k} = {_toml_value(v)}" for k, v in jwk.items())
        _write_private(self.config_file, "\n".join([
            f"SECRET_KEY = {_toml_value(self.secret_key)}",
            f"SERVER_NAME = {_toml_value(f'127.0.0.1:{self.port}')}",
            'PREFERRED_URL_SCHEME = "http"',
            'BROKER = "dramatiq_eager_broker:EagerBroker"',
            "[CANAILLE]",
            f"NAME = {_toml_value(self.title)}",
            'DATABASE = "sql"',
            "CAPTCHA_ENABLED = false",
            "ENABLE_PASSWORD_RECOVERY = false",
            "ENABLE_INTRUDER_LOCKOUT = true",
            *ACL,
            "[CANAILLE_SQL]",
            f"DATABASE_URI = {_toml_value('sqlite:///' + str(folder / 'canaille.sqlite'))}",
            "[CANAILLE_OIDC]",
            "REQUIRE_NONCE = true",
            'TRUSTED_DOMAINS = ["127.0.0.1"]',
            f"ACTIVE_JWKS = [{{{inline}}}]",
            "",
        ]))
        if not (folder / "seeded").exists():
            self._seed()

    def _run(self, *args: str, stdin: str | None = None) -> None:
        env = self.env | {"CANAILLE_CONFIG": str(self.config_file)}
        done = subprocess.run([str(Path(sys.executable).with_name("canaille")), *args],
                              input=stdin, env=env, capture_output=True, text=True, timeout=120,
                              check=False, umask=0o077)  # its database: the owner's only
        if done.returncode != 0:
            raise SiteError(f"the identity provider's `canaille {args[0]}` failed: "
                            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}",
                            fix=f"read {self.folder}; remove the folder to seed it afresh")

    def _seed(self) -> None:
        """The web app as a client, one group per role, and the users (once). canaille hashes
        the passwords as it restores them (they travel on its stdin, never in argv)."""
        self._run("db", "upgrade")
        groups = {role: str(uuid.uuid4()) for _, roles in self.users.values() for role in roles}
        domain = re.sub(r"[^a-z0-9-]", "-", self.title.lower())
        users = []
        for user, (password, roles) in self.users.items():
            users.append({"id": str(uuid.uuid4()), "user_name": user,
                          "password": password,
                          "given_name": "Demo", "family_name": user.capitalize(),
                          "formatted_name": f"Demo {user.capitalize()}",
                          "emails": [f"{user}@{domain}.radflow.invalid"],
                          "groups": [groups[r] for r in roles]})
        app = self.app_url
        client = str(uuid.uuid4())
        dump = {
            "user": users,
            "group": [{"id": gid, "display_name": role,
                       "members": [u["id"] for u in users if gid in u["groups"]]}
                      for role, gid in groups.items()],
            "client": [{
                "id": client, "client_id": self.client_id, "audience": [client],
                "client_secret": self.client_secret,
                "client_name": self.title, "client_uri": app,
                "redirect_uris": [f"{app}/auth/callback"],
                "post_logout_redirect_uris": [f"{app}/logged-out"],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "scope": ["openid", "profile", "email", "groups"]}],
        }
        self._run("restore", stdin=json.dumps(dump))
        (self.folder / "seeded").write_text("canaille seeded with the web app client and users\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = self.env | {"CANAILLE_CONFIG": str(self.config_file)}
        return [str(Path(sys.executable).with_name("canaille")), "run", "--bind",
                f"127.0.0.1:{self.port}"], env

    def probe(self) -> tuple[bool, str]:
        try:
            answer = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=3)
            if answer.status_code != 200:
                return False, f"discovery answered HTTP {answer.status_code}"
            return True, f"OpenID provider (canaille), issuer {answer.json()['issuer']}"
        except (requests.RequestException, ValueError, KeyError) as exc:
            return False, type(exc).__name__


def site_canaille(ctx: SiteContext) -> Canaille:
    users = {user: (ctx.secrets.demo_users[user].get_secret_value(), roles)
             for user, roles in DEMO_USERS.items()}
    return Canaille(idp_dir(ctx), ctx.config.ports.idp, f"radflow site {ctx.name}",
                    ctx.secrets.idp_secret_key.get_secret_value(), ctx.config.oidc.client_id,
                    ctx.secrets.oidc_client_secret.get_secret_value(), web_url(ctx), users,
                    ctx.base_env())


class IdpComponent(Component):
    """canaille on loopback, configured and seeded from the site's secrets."""

    name = "idp"
    ports: ClassVar[dict[str, str]] = {"idp": "--idp-port"}

    def enabled(self, ctx: SiteContext) -> bool:
        return ctx.config.oidc.issuer is None

    def config_file(self, ctx: SiteContext) -> Path:
        return idp_dir(ctx) / "canaille.toml"

    def prepare(self, ctx: SiteContext) -> None:
        site_canaille(ctx).prepare()

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        return site_canaille(ctx).command()

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        return site_canaille(ctx).probe()

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"issuer": issuer(ctx), "accounts": f"{issuer(ctx)}/login"}
