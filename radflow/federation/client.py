"""A site's side of the hub: joining (an Ed25519 key that never leaves the site, the hub's key
pinned), and short-lived tokens from OAuth2 client credentials with ``private_key_jwt``.

Files under ``sites/NAME/federation/``: ``site.key`` (0600) and ``site.key.pub``, ``hub.pub``
(the pinned hub key), ``hub.json`` (its URL and both fingerprints) and, for a hub whose TLS
certificate a private CA signed, ``hub-ca.pem`` (that CA: every call to the hub verifies with it).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import requests

from radflow.errors import ConfigurationError, FederationError, SiteError, TransientError
from radflow.hub.registry import ASSERTION_TYPE


def federation_dir(site_root: Path) -> Path:
    return site_root / "federation"


def verify_setting(folder: Path) -> str | bool:
    """What requests verifies the hub's certificate with: the site's pinned CA, else the
    system's trust store."""
    ca = folder / "hub-ca.pem"
    return str(ca) if ca.exists() else True


def _unreachable(base: str, exc: requests.RequestException) -> SiteError:
    if isinstance(exc, requests.exceptions.SSLError):
        return SiteError(f"the hub at {base} presented a TLS certificate this site does not "
                         "trust", fix="pass --ca-bundle FILE: the certificate of the CA that "
                                      "signed the hub's (ask the hub's operator)")
    return SiteError(f"the hub at {base} did not answer ({type(exc).__name__})",
                     fix="check the hub's URL and that it is up (radflow hub status)")


def join(hub_url: str, site: str, code: str, site_root: Path,
         ca_bundle: Path | None = None) -> dict[str, str]:
    """Enrol at the hub with a one-time code; returns both fingerprints (compare them with the
    hub's operator by another channel). ``ca_bundle``: the CA that signed the hub's TLS
    certificate, kept with the site's federation files.

    Raises:
        ConfigurationError: the site has joined a hub already, or the hub refused the code.
        SiteError: the hub did not answer.
    """
    from radflow.federation.signing import fingerprint, generate

    folder = federation_dir(site_root)
    if (folder / "hub.json").exists():
        raise ConfigurationError(f"site {site!r} has joined a hub already ({folder / 'hub.json'})",
                                 fix="remove that folder on purpose to join another hub")
    key_path = folder / "site.key"
    if not key_path.exists():
        generate(key_path)
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise ConfigurationError(f"{ca_bundle} does not exist",
                                     fix="pass the CA certificate (PEM) to --ca-bundle")
        (folder / "hub-ca.pem").write_bytes(ca_bundle.read_bytes())
    public = key_path.with_suffix(".key.pub").read_bytes()
    base = hub_url.rstrip("/")
    try:
        answer = requests.post(f"{base}/v1/enrol", timeout=30, verify=verify_setting(folder),
                               json={"site": site, "code": code,
                                     "public_key_pem": public.decode()})
    except requests.RequestException as exc:
        raise _unreachable(base, exc) from exc
    if answer.status_code != 200:
        raise ConfigurationError(f"the hub refused the enrolment ({_error(answer)})",
                                 fix="ask the hub's operator for a new code "
                                     f"(radflow hub site add {site})")
    body = answer.json()
    (folder / "hub.pub").write_text(body["hub_key_pem"])
    info = {"url": base, "site": site, "token_url": body["token_url"],
            "hub_fingerprint": body["hub_fingerprint"], "site_fingerprint": fingerprint(public)}
    (folder / "hub.json").write_text(json.dumps(info, indent=2))
    return info


def _error(answer: requests.Response) -> str:
    try:
        return str(answer.json().get("error") or answer.json().get("detail"))
    except ValueError:
        return f"HTTP {answer.status_code}"


class HubUnavailable(FederationError, TransientError):
    """The hub did not answer (down, restarting, or the link is cut) or answered that it is
    busy (5xx): tried again later, never a refusal."""


BUSY = (408, 429, 500, 502, 503, 504)  # answers that say "not now" (a proxy, a restart)


class HubClient:
    """Calls to the hub as one site, with a fresh token when the last one is near its end. A
    token the hub refuses (401: it expired there first, the hub's clock runs ahead) is dropped
    and the call made once more with a new one; a hub that does not answer raises
    :class:`HubUnavailable`."""

    def __init__(self, site_root: Path) -> None:
        folder = federation_dir(site_root)
        try:
            self.info = json.loads((folder / "hub.json").read_text())
        except FileNotFoundError as exc:
            raise ConfigurationError("this site has not joined a hub",
                                     fix="radflow site join HUB_URL --code CODE") from exc
        self.key_path = folder / "site.key"
        self.verify = verify_setting(folder)
        self._token: str | None = None
        self._until = 0.0
        self._margin = 30.0  # seconds before its end a token is renewed

    def assertion(self, lifetime: int = 60) -> str:
        """A signed client assertion (RFC 7523): iss = sub = the site, aud = the token URL."""
        from joserfc import jwt
        from joserfc.jwk import OKPKey

        from radflow.federation.signing import load

        load(self.key_path)  # refuses a key file others can read
        key = OKPKey.import_key(self.key_path.read_bytes())
        now = int(time.time())
        claims = {"iss": self.info["site"], "sub": self.info["site"],
                  "aud": self.info["token_url"], "iat": now, "exp": now + lifetime,
                  "jti": secrets.token_urlsafe(16)}
        return jwt.encode({"alg": "Ed25519"}, claims, key, algorithms=["Ed25519"])

    def token(self) -> str:
        """The current token, or a new one when it is within its last tenth (30 s at most).

        Raises:
            HubUnavailable: the hub did not answer, or answered busy.
            SiteError: the hub refused a token (the site may be revoked).
        """
        if self._token and time.time() < self._until - self._margin:
            return self._token
        answer = self._send("POST", self.info["token_url"], data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(), "client_id": self.info["site"]})
        if answer.status_code in BUSY:
            raise self.unavailable(answer, "a token")
        if answer.status_code != 200:
            raise SiteError(f"the hub refused a token ({_error(answer)})",
                            fix="the site may be revoked: ask the hub's operator")
        body = answer.json()
        lifetime = float(body["expires_in"])
        self._token, self._until = body["access_token"], time.time() + lifetime
        self._margin = min(30.0, lifetime / 10)
        return self._token

    def forget_token(self) -> None:
        self._token, self._until = None, 0.0

    def get(self, path: str, **params: Any) -> requests.Response:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self._call("POST", path, json=body)

    def get_json(self, path: str, **params: Any) -> Any:
        """A GET's JSON body.

        Raises:
            HubUnavailable: no answer, or a busy one.
            FederationError: any other answer than 200.
        """
        answer = self.get(path, **params)
        if answer.status_code in BUSY:
            raise self.unavailable(answer, f"GET {path}")
        if answer.status_code != 200:
            raise FederationError(f"the hub answered HTTP {answer.status_code} to GET {path} "
                                  f"({_error(answer)})",
                                  fix="the site may be revoked: ask the hub's operator")
        return answer.json()

    def unavailable(self, answer: requests.Response, what: str) -> HubUnavailable:
        return HubUnavailable(f"the hub at {self.info['url']} answered HTTP "
                              f"{answer.status_code} to {what}",
                              fix="it is asked again; see the hub's log if it persists")

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.info['url']}/v1/sites/{self.info['site']}{path}"
        answer = self._send(method, url, headers=self._bearer(), **kwargs)
        if answer.status_code == 401:  # the hub let this token expire first: a new one, once
            self.forget_token()
            try:
                headers = self._bearer()
            except SiteError:  # no new token either (a revoked site): the hub's 401 stands
                return answer
            answer = self._send(method, url, headers=headers, **kwargs)
        return answer

    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, url, timeout=60, verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise _unreachable(self.info["url"], exc) from exc
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise HubUnavailable(f"the hub at {self.info['url']} did not answer "
                                 f"({type(exc).__name__})",
                                 fix="it is asked again; check the network between the site "
                                     "and the hub, and that the hub is up") from exc
