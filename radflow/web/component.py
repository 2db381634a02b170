"""The ``worklist`` site component: the site's web app under uvicorn, on loopback."""

from __future__ import annotations

import sys
from typing import ClassVar

import requests

from radflow.site.components import Component
from radflow.site.context import SiteContext
from radflow.web.idp import web_url


class WorklistComponent(Component):
    """``python -m radflow.web --site NAME``: healthy when /healthz answers and the OpenID
    provider's discovery document was read."""

    name = "worklist"
    ports: ClassVar[dict[str, str]] = {"worklist": "--worklist-port"}
    depends_on = ("prefect-server", "idp")

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(ctx.prefect_client_env())
        return [sys.executable, "-m", "radflow.web", "--site", ctx.config.name], env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            answer = requests.get(f"{web_url(ctx)}/healthz", timeout=3)
            if answer.status_code != 200:
                return False, f"/healthz answered HTTP {answer.status_code}"
            body = answer.json()
            return True, f"log-in through {body['issuer']}"
        except (requests.RequestException, ValueError, KeyError) as exc:
            return False, type(exc).__name__

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"worklist": f"{web_url(ctx)}/reviews", "explore": f"{web_url(ctx)}/explore"}
