"""radflow: federated medical-image analysis on Orthanc and Prefect.

Importing radflow is cheap: heavy libraries (torch, nnunetv2, SimpleITK, radiomics, prefect)
are imported inside the functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
