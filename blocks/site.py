"""The ``Site`` block: what a flow needs to know about the site it runs at."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from radflow.blocks.orthanc_server import OrthancServer


class Site(Block):
    """A radflow site: its name, folders, ports, work pool and Orthanc.

    ``radflow site up`` saves one per site under the site's own name.

    Example:
        ```python
        from radflow.blocks import Site

        site = Site.load("lab")
        orthanc = site.orthanc.client()
        print(site.name, site.work_pool, orthanc.statistics())
        ```
    """

    _block_type_name = "radflow Site"
    _block_type_slug = "radflow-site"
    _description = "A radflow site (one hospital): folders, ports, work pool and its Orthanc."

    name: str = Field(description="Site name.", examples=["lab"])
    root: str = Field(description="Folder holding the site's state.",
                      examples=["/home/me/.radflow/sites/lab"])
    aet: str = Field(description="DICOM AE title of the site's Orthanc.", examples=["LAB"])
    orthanc_http_port: int = Field(description="Orthanc's HTTP port.", examples=[8042])
    orthanc_dicom_port: int = Field(description="Orthanc's DICOM port.", examples=[4242])
    prefect_port: int = Field(description="Port of the site's Prefect server.", examples=[4200])
    work_pool: str = Field(description="The site's process work pool.", examples=["lab-process"])
    orthanc: OrthancServer = Field(description="The site's Orthanc.")
    catalog_url: SecretStr = Field(
        description="SQLAlchemy URL of the site catalog (SQLite file or PostgreSQL).",
        examples=["sqlite:////home/me/.radflow/sites/lab/catalog.db"])
