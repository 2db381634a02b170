"""Orthanc, the site's research PACS: configuration templates and the typed client.

Installed as ``radflow.orthanc`` (never as a top-level ``orthanc``: that name belongs to
Orthanc's own Python plugin).
"""

from radflow.orthanc.client import OrthancClient, UploadResult
from radflow.orthanc.models import series_state

__all__ = ["OrthancClient", "UploadResult", "series_state"]
