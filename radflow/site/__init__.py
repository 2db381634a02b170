"""Site lifecycle: Orthanc + the site's Prefect server + a worker, under RADFLOW_HOME."""

from radflow.site.manager import SiteManager, SiteStatus

__all__ = ["SiteManager", "SiteStatus"]
