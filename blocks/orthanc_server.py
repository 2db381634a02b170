"""The ``OrthancServer`` block: how flows reach a site's Orthanc."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from radflow.orthanc.client import OrthancClient


class OrthancServer(Block):
    """A site's Orthanc (research PACS): its HTTP URL, its DICOM address and credentials.

    ``radflow site up`` saves one per site as ``<site>-orthanc``.

    Example:
        ```python
        from radflow.blocks import OrthancServer

        orthanc = OrthancServer.load("lab-orthanc")
        print(orthanc.client().statistics())
        ```
    """

    _block_type_name = "radflow Orthanc Server"
    _block_type_slug = "radflow-orthanc-server"
    _description = "A site's Orthanc research PACS: REST/DICOMweb URL, DICOM AE and credentials."

    url: str = Field(
        default="http://127.0.0.1:8042",
        description="Root URL of Orthanc's REST API (always loopback: Orthanc listens on every "
        "interface and radflow only talks to it on 127.0.0.1).",
        examples=["http://127.0.0.1:8042"],
    )
    username: str = Field(default="radflow", description="HTTP user registered in Orthanc.",
                          examples=["radflow"])
    password: SecretStr = Field(description="Password of that user.", examples=["********"])
    aet: str = Field(description="Orthanc's DICOM AE title.", examples=["LAB"])
    dicom_host: str = Field(default="127.0.0.1", description="Host of Orthanc's DICOM port.",
                            examples=["127.0.0.1"])
    dicom_port: int = Field(default=4242, description="Orthanc's DICOM (C-STORE) port.",
                            examples=[4242])

    def client(self, timeout: float = 60.0) -> OrthancClient:
        """A typed client for this Orthanc."""
        return OrthancClient(self.url, self.username, self.password.get_secret_value(),
                             timeout=timeout)
