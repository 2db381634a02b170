"""radflow's Prefect blocks: shared, persisted configuration on a site's Prefect server.

Importing this package imports Prefect.
"""

from radflow.blocks.orthanc_server import OrthancServer
from radflow.blocks.site import Site

ALL_BLOCKS = [OrthancServer, Site]

__all__ = ["ALL_BLOCKS", "OrthancServer", "Site"]
