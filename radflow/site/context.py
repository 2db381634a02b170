"""The site handle: everything radflow knows about one site (its settings, folders, recorded
configuration and secrets), and the clients built from it.

It is the one source of truth: the ``Site`` block that flows load is a projection of it
(:meth:`SiteContext.block`), and every component, CLI command and test gets its URLs and
credentials here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from radflow.settings import RadflowSettings
from radflow.site.config import SiteConfig, SitePaths, SiteSecrets

if TYPE_CHECKING:
    from radflow.orthanc.client import OrthancClient
    from radflow.prefect_api import PrefectApi


@dataclass
class SiteContext:
    """One site: settings, folders, recorded configuration and secrets."""

    settings: RadflowSettings
    paths: SitePaths
    config: SiteConfig
    secrets: SiteSecrets

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.orthanc_http}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.prefect}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def catalog_url(self) -> str:
        if self.secrets.catalog_url is not None:
            from radflow.postgres import sync_url

            return sync_url(self.secrets.catalog_url.get_secret_value())
        return f"sqlite:///{self.paths.root / 'catalog.db'}"

    @property
    def results_dir(self):
        """Where the site's Prefect keeps persisted flow and task results (never elsewhere)."""
        return self.paths.prefect_home / "results"

    def orthanc_client(self, timeout: float = 60.0) -> OrthancClient:
        """A client for the site's Orthanc, with the site's credentials."""
        from radflow.orthanc.client import OrthancClient

        return OrthancClient(self.orthanc_url, *self.orthanc_auth(), timeout=timeout)

    def prefect(self, timeout: float = 30.0) -> PrefectApi:
        """The typed client of the site's Prefect server."""
        from radflow.prefect_api import PrefectApi

        return PrefectApi(self.prefect_api_url, self.prefect_auth(), timeout=timeout,
                          site=self.name)

    def orthanc_auth(self) -> tuple[str, str]:
        return (self.secrets.orthanc_username, self.secrets.orthanc_password.get_secret_value())

    def prefect_auth(self) -> tuple[str, str]:
        user, _, password = self.secrets.prefect_auth_string.get_secret_value().partition(":")
        return (user, password)

    def base_env(self) -> dict[str, str]:
        """The environment of every site process: the caller's, minus any Prefect settings
        (a user's own PREFECT_API_URL must never point a site process elsewhere)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "RADFLOW_HOME": str(self.paths.home),
            "RADFLOW_SITE": self.config.name,
            "TCP_NODELAY": "1",  # DCMTK (Orthanc, storescu) disables Nagle only with this
            "PREFECT_HOME": str(self.paths.prefect_home),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.results_dir),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_COLORS": "false",
        })
        return env

    def prefect_client_env(self) -> dict[str, str]:
        """Settings for a Prefect client (worker, flow runs, CLI) of this site."""
        from radflow.prefect_api import PREFECT_CLIENT_RETRIES

        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string.get_secret_value(),
            **PREFECT_CLIENT_RETRIES,
        }

    def block(self):
        """The ``Site`` block of this site (what flows load), projected from this handle."""
        from pydantic import SecretStr

        from radflow.blocks import OrthancServer, Site

        orthanc = OrthancServer(
            url=self.orthanc_url,
            username=self.secrets.orthanc_username,
            password=self.secrets.orthanc_password,
            aet=self.config.aet,
            dicom_host="127.0.0.1",
            dicom_port=self.config.ports.orthanc_dicom,
        )
        return Site(
            name=self.config.name,
            root=str(self.paths.root),
            aet=self.config.aet,
            orthanc_http_port=self.config.ports.orthanc_http,
            orthanc_dicom_port=self.config.ports.orthanc_dicom,
            prefect_port=self.config.ports.prefect,
            work_pool=self.config.work_pool,
            orthanc=orthanc,
            catalog_url=SecretStr(self.catalog_url),
        )
