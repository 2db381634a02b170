"""Register radflow's block types on a site's Prefect server and save the site's blocks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from radflow.site.components import SiteContext


@contextmanager
def site_prefect(ctx: SiteContext) -> Iterator[None]:
    """Point Prefect clients in this process at the site's Prefect server."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: ctx.prefect_api_url,
               PREFECT_API_AUTH_STRING: ctx.secrets.prefect_auth_string.get_secret_value()}
    with temporary_settings(updates=updates):
        yield


def orthanc_block_name(site: str) -> str:
    return f"{site}-orthanc"


def register_site_blocks(ctx: SiteContext) -> None:
    """Register the block types of radflow and its plugins (idempotent), save ``<site>-orthanc``
    and ``<site>``, and run each plugin's ``setup_site`` hook."""
    from radflow.blocks import ALL_BLOCKS, OrthancServer, Site
    from radflow.plugins import plugins

    cfg = ctx.config
    with site_prefect(ctx):
        for block in [*ALL_BLOCKS, *(b for p in plugins() for b in p.blocks)]:
            block.register_type_and_schema()
        orthanc = OrthancServer(
            url=ctx.orthanc_url,
            username=ctx.secrets.orthanc_username,
            password=ctx.secrets.orthanc_password,
            aet=cfg.aet,
            dicom_host="127.0.0.1",
            dicom_port=cfg.ports.orthanc_dicom,
        )
        orthanc.save(orthanc_block_name(cfg.name), overwrite=True)
        Site(
            name=cfg.name,
            root=str(ctx.paths.root),
            aet=cfg.aet,
            orthanc_http_port=cfg.ports.orthanc_http,
            orthanc_dicom_port=cfg.ports.orthanc_dicom,
            prefect_port=cfg.ports.prefect,
            work_pool=cfg.work_pool,
            orthanc=OrthancServer.load(orthanc_block_name(cfg.name)),
            catalog_url=SecretStr(ctx.catalog_url),
        ).save(cfg.name, overwrite=True)
        for plugin in plugins():
            if plugin.setup_site is not None:
                plugin.setup_site(ctx)
