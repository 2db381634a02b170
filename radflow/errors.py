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


class PrefectUnavailable(SiteError):
    """The site's Prefect server did not answer (stopped, starting, or unreachable)."""


class EmptyResult(RadflowError):
    """A producer ran and found nothing to write (e.g. a model found none of its structures)."""


class NotFound(RadflowError, LookupError):
    """A lookup by name or key found nothing (also a LookupError, for ``except KeyError``-style
    callers)."""


class TransientError(RadflowError):
    """A failure that may go away on its own (a service restarting, a lock held): retried."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may succeed if tried again unchanged.

    Transient: Orthanc or Prefect unreachable or answering 5xx, connection errors and timeouts,
    :class:`TransientError`. Never transient: bad input, configuration, a missing plugin,
    policy and federation refusals, an empty result, and programming errors.
    """
    if isinstance(exc, OrthancError):
        return exc.status is None or exc.status >= 500
    if isinstance(exc, PrefectUnavailable | TransientError):
        return True
    if isinstance(exc, RadflowError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith(("httpx", "httpcore", "requests", "urllib3")):
        return any(word in name for word in ("Connect", "Timeout", "RemoteProtocol", "ReadError"))
    if module.startswith("sqlalchemy") and name == "OperationalError":
        return "locked" in str(exc) or "could not connect" in str(exc)
    return False
