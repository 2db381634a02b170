"""The site's web app: the clinicians' worklist (phase 5), then the catalog views (phase 8).

One FastAPI app per site (:mod:`radflow.web.app`), server-rendered templates, OpenID Connect
log-in (:mod:`radflow.web.auth`), pages contributed by plugins (:class:`WebPages`, declared in
``Plugin.web``), started by `radflow site up` as the ``worklist`` component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WebPages:
    """Pages a plugin adds to the site's web app.

    Attributes:
        router: a FastAPI ``APIRouter`` with the pages and their API.
        templates: the folder of its Jinja templates (they extend ``base.html``).
        nav: navigation entries: (label, path, roles that see it).
    """

    router: Any
    templates: Path
    nav: tuple[tuple[str, str, tuple[str, ...]], ...] = field(default_factory=tuple)
