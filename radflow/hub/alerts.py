"""Silence is noticed: a site whose agent has not been heard for N minutes raises an alert,
through Prefect's own machinery on the hub's Prefect server.

- Every authenticated contact of a site's agent with the hub (its long poll for jobs, every 20 s
  at most while it runs; its report, every minute) is noted: the site's ``last_heard`` in the hub
  database and a Prefect event ``radflow.site.heard`` on the resource ``radflow.site.<name>``
  (at most one per site every 10 s, posted off the request's path: a hub whose Prefect is down
  still answers its sites).
- `radflow hub alerts set --webhook URL [--silent-after 5m]` saves a Prefect notification block
  (``CustomWebhookNotificationBlock`` named ``radflow-site-silent``; or ``--block TYPE/NAME``:
  one the operator made in Prefect's UI, e-mail through SendGrid, Slack, Teams, PagerDuty...)
  and one automation: a *proactive* trigger expecting ``radflow.site.heard`` for each site
  resource within N, whose action sends that block the site's name and when it was last heard.
  Prefect's server evaluates it (every 5 s), once per silence: a site that is heard again and
  goes silent again alerts again.
- `radflow hub alerts` shows the automation; `--test` sends one notification through the block
  now; `radflow hub alerts off` removes the automation (the block stays).

A site that never contacted the hub raises nothing (Prefect keeps a bucket per resource from its
first event); the fleet table shows it as silent (never heard).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from radflow.catalog.models.base import utcnow
from radflow.errors import ConfigurationError
from radflow.hub.models import HubSite

HEARD = "radflow.site.heard"
AUTOMATION = "radflow: a site went silent"
BLOCK_NAME = "radflow-site-silent"
NOTE_EVERY = 10.0  # seconds between two notes of one site's contact
SUBJECT = "radflow hub: site {{ event.resource.name }} is silent"
BODY = ("The agent of site {{ event.resource.name }} has not been heard for {silence} "
        "(last heard {{ event.occurred }}). Look at the site (radflow site status) and at the "
        "hub's fleet (radflow hub fleet).")


def heard_event(site: str, now: datetime | None = None) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "occurred": (now or datetime.now(UTC)).isoformat(),
            "event": HEARD, "resource": {"prefect.resource.id": f"radflow.site.{site}",
                                         "prefect.resource.name": site}}


class Contact:
    """Notes a site's contact (in the API process): ``last_heard``, and the Prefect event when
    the hub runs a Prefect server (``home``); at most once per site every ``every`` seconds."""

    def __init__(self, engine: Engine, home: Any | None, every: float = NOTE_EVERY) -> None:
        self.engine, self.home, self.every = engine, home, every
        self.noted: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, site: str) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.noted.get(site, -1e9) < self.every:
                return
            self.noted[site] = now
        with Session(self.engine) as session:
            row = session.get(HubSite, site)
            if row is not None:
                row.last_heard = utcnow()
                session.add(row)
                session.commit()
        if self.home is not None:
            threading.Thread(target=self._emit, args=(site,), daemon=True).start()

    def _emit(self, site: str) -> None:
        import requests

        user, _, password = self.home.prefect_auth_string().partition(":")
        try:
            requests.post(f"{self.home.prefect_api_url}/events", json=[heard_event(site)],
                          auth=(user, password), timeout=5)
        except requests.RequestException:  # (the hub's Prefect is down: no alert can fire)
            with self.lock:
                self.noted.pop(site, None)  # the next contact tries again


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``5m``, ``1h`` -> a timedelta of at least 10 s (Prefect's minimum).

    Raises:
        ConfigurationError: not a duration, or under 10 s.
    """
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a duration",
                                 fix="e.g. --silent-after 5m (or 300, 300s, 1h)") from None
    if not 10 <= seconds <= 7 * 86400:
        raise ConfigurationError(f"--silent-after {text}: between 10 s and 7 days",
                                 fix="e.g. --silent-after 5m")
    return timedelta(seconds=seconds)


def _say(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _block_id(home: Any, webhook: str | None, block: str | None) -> tuple[str, str]:
    """The notification block's document id and its slug: saved from ``webhook``, or the
    operator's ``block`` (``type-slug/name``)."""
    from radflow.hub.services import hub_prefect

    with hub_prefect(home):
        if webhook:
            from prefect.blocks.notifications import CustomWebhookNotificationBlock

            if not webhook.startswith(("http://", "https://")):
                raise ConfigurationError(f"--webhook {webhook!r} is not an http(s) URL",
                                         fix="e.g. --webhook https://chat.example.org/hooks/X")
            saved = CustomWebhookNotificationBlock(
                name=BLOCK_NAME, url=webhook,
                json_data={"subject": "{{subject}}", "text": "{{body}}"})
            document = saved.save(BLOCK_NAME, overwrite=True)
            return str(document), f"custom-webhook/{BLOCK_NAME}"
        if not block or "/" not in block:
            raise ConfigurationError("name a notification: --webhook URL, or --block "
                                     "TYPE/NAME (a block made in the hub's Prefect UI)",
                                     fix="e.g. radflow hub alerts set --webhook URL")
        from prefect.blocks.core import Block

        try:
            loaded = Block.load(block)
        except ValueError as exc:
            raise ConfigurationError(f"the hub's Prefect has no block {block!r}",
                                     fix="make it in the hub's Prefect UI (Blocks), or use "
                                         "--webhook URL") from exc
        if not hasattr(loaded, "notify"):
            raise ConfigurationError(f"block {block!r} is no notification block",
                                     fix="choose a notification block (webhook, e-mail, chat)")
        return str(loaded._block_document_id), block


def _automations(home: Any) -> list[dict[str, Any]]:
    api = home.prefect()
    found = api._request("POST", "automations/filter", "reading the automations",
                         json={"limit": 200}).json()
    return [a for a in found if a["name"] == AUTOMATION]


def configure(home: Any, silent_after: timedelta, webhook: str | None = None,
              block: str | None = None) -> dict[str, Any]:
    """Save the notification and (re)make the automation; returns what :func:`current` says."""
    block_id, slug = _block_id(home, webhook, block)
    api = home.prefect()
    for old in _automations(home):
        api._request("DELETE", f"automations/{old['id']}", "removing the old automation",
                     ok=(200, 204, 404))
    api._request("POST", "automations/", "making the automation", json={
        "name": AUTOMATION, "enabled": True,
        "description": f"Sends {slug} when a site's agent has not been heard for "
                       f"{_say(silent_after)} (radflow hub alerts).",
        "trigger": {"type": "event", "posture": "Proactive", "after": [HEARD], "expect": [HEARD],
                    "match": {"prefect.resource.id": "radflow.site.*"},
                    "for_each": ["prefect.resource.id"], "threshold": 1,
                    "within": silent_after.total_seconds()},
        "actions": [{"type": "send-notification", "block_document_id": block_id,
                     "subject": SUBJECT, "body": BODY.replace("{silence}",
                                                              _say(silent_after))}]})
    return current(home) | {"block": slug}


def current(home: Any) -> dict[str, Any]:
    """The silence automation as the hub's Prefect holds it (``enabled`` False: none)."""
    found = _automations(home)
    if not found:
        return {"enabled": False}
    automation = found[0]
    return {"enabled": automation["enabled"], "id": automation["id"],
            "silent_after_s": automation["trigger"]["within"],
            "block_document_id": automation["actions"][0]["block_document_id"],
            "description": automation["description"]}


def remove(home: Any) -> int:
    api = home.prefect()
    found = _automations(home)
    for old in found:
        api._request("DELETE", f"automations/{old['id']}", "removing the automation",
                     ok=(200, 204, 404))
    return len(found)


def send_test(home: Any) -> str:
    """Send one notification through the automation's block now; returns the block's name."""
    from radflow.hub.services import hub_prefect

    now = current(home)
    if not now["enabled"]:
        raise ConfigurationError("no silence alert is set on this hub",
                                 fix="radflow hub alerts set --webhook URL")
    with hub_prefect(home):
        from prefect.blocks.core import Block

        block = Block.load_from_ref(now["block_document_id"])
        block.notify("A test of the hub's silence alert (radflow hub alerts --test).",
                     subject="radflow hub: a test alert")
        return str(now["block_document_id"])
