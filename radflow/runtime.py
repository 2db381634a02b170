"""What a flow run needs to know about the site it runs at, resolved from the site's blocks.

Flow runs find their site by the ``site`` parameter or the ``RADFLOW_SITE`` environment
variable (every site process has it), then load the ``Site`` block saved by ``site up``.
The result is cached per process: a worker's flow-run process resolves it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from radflow.errors import ConfigurationError
from radflow.orthanc.client import OrthancClient


@dataclass(frozen=True)
class SiteRuntime:
    name: str
    orthanc: OrthancClient
    catalog_url: str


def site_name(site: str | None = None) -> str:
    """The site a flow runs for: the argument, else RADFLOW_SITE."""
    name = site or os.environ.get("RADFLOW_SITE")
    if not name:
        raise ConfigurationError(
            "no site given: the flow does not know which site's Orthanc and catalog to use",
            fix="pass the `site` parameter, or run the flow on a site worker (RADFLOW_SITE is set)",
        )
    return name


@lru_cache(maxsize=4)
def site_runtime(site: str | None = None) -> SiteRuntime:
    """Orthanc client and catalog URL of the site (from its ``Site`` block)."""
    from radflow.blocks import Site

    name = site_name(site)
    try:
        block = Site.load(name)
    except ValueError as exc:
        raise ConfigurationError(
            f"no Site block named {name!r} on this Prefect server",
            fix=f"run `radflow site up --site {name}` (it saves the block)",
        ) from exc
    return SiteRuntime(name, block.orthanc.client(), block.catalog_url.get_secret_value())
