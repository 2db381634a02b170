"""The one error hierarchy of radflow.

Every message names the thing, the value received, what was expected and the fix, so that
the CLI can print it as a one-line reason and exit non-zero.
"""

from __future__ import annotations


class RadflowError(Exception):
    """Root of all radflow errors.

    Args:
        message: what went wrong (the thing, the value received, what was expected).
        fix: what the user should do about it; appended to the message.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class ConfigurationError(RadflowError):
    """A setting, a file under RADFLOW_HOME or a command-line value is wrong or missing."""


class PluginNotFound(RadflowError):
    """A plugin or one of its tasks was asked for by name and is not installed."""


class OrthancError(RadflowError):
    """Orthanc answered with an error, or could not be reached.

    Attributes:
        status: the HTTP status code, or None when no answer came (connection refused, timeout).
        url: the URL that was requested.
    """

    def __init__(self, message: str, *, status: int | None, url: str, fix: str | None = None):
        self.status = status
        self.url = url
        where = f"{url} answered HTTP {status}" if status is not None else f"{url} did not answer"
        super().__init__(f"{where}: {message}", fix=fix)


class DicomInputError(RadflowError):
    """A DICOM file or dataset is unreadable, incomplete or of the wrong kind."""


class PolicyViolation(RadflowError):
    """Something would break the site's policy (egress, approvals)."""


class FederationError(RadflowError):
    """The hub or a site agent failed to talk to the other side."""


class SiteError(RadflowError):
    """A site component failed to start, stop or answer."""
