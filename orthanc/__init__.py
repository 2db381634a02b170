"""Orthanc, the site's research PACS: configuration templates and the typed client.

Installed as ``radflow.orthanc`` (never as a top-level ``orthanc``: that name belongs to
Orthanc's own Python plugin).
"""

from radflow.orthanc.client import OrthancClient, SeriesInfo, UploadResult

__all__ = ["OrthancClient", "SeriesInfo", "UploadResult"]
