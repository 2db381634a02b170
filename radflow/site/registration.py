"""Register radflow's block types on a site's Prefect server and save the site's blocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from radflow.site.context import SiteContext


@contextmanager
def site_prefect(ctx: SiteContext) -> Iterator[None]:
    """Point Prefect clients in this process at the site's Prefect server."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_RETRY_EXTRA_CODES,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    # no logs to the API from here: outside a flow run they belong to no run, and a queued one
    # would be sent after the settings (the auth) are gone (draining the queue cost 5 s a call)
    updates = {PREFECT_API_URL: ctx.prefect_api_url,
               PREFECT_API_AUTH_STRING: ctx.secrets.prefect_auth_string.get_secret_value(),
               PREFECT_LOCAL_STORAGE_PATH: ctx.results_dir,
               PREFECT_LOGGING_TO_API_ENABLED: False,
               PREFECT_CLIENT_RETRY_EXTRA_CODES: {500}}  # (see radflow.prefect_api)
    with temporary_settings(updates=updates):
        yield


def orthanc_block_name(site: str) -> str:
    return f"{site}-orthanc"


# Prefect keeps a block class's type and schema ids in class variables, set by registering with
# a server and used by every save: two sites registering side by side in one process (sites
# started in parallel) would save one site's blocks with the other server's ids (the site's
# Prefect answers 500 or 404: seen in CI). One registration at a time, each reading its own
# server's ids first.
_REGISTERING = threading.Lock()


def register_site_blocks(ctx: SiteContext) -> None:
    """Register the block types of radflow and its plugins (idempotent), save ``<site>-orthanc``
    and ``<site>`` (projections of the site handle), and run each plugin's ``setup_site``
    hook."""
    from radflow.blocks import ALL_BLOCKS
    from radflow.plugins import plugins

    with _REGISTERING, site_prefect(ctx):
        for block in [*ALL_BLOCKS, *(b for p in plugins() for b in p.blocks)]:
            block.register_type_and_schema()
        site_block = ctx.block()
        site_block.orthanc.save(orthanc_block_name(ctx.name), overwrite=True)
        site_block.save(ctx.name, overwrite=True)
        for plugin in plugins():
            if plugin.setup_site is not None:
                plugin.setup_site(ctx)
