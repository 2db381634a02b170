"""Process settings (environment variables with the ``RADFLOW_`` prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RadflowSettings(BaseSettings):
    """Settings read from the environment.

    Example:
        ``RADFLOW_HOME=/srv/radflow radflow site up --site lab`` keeps all of the site's state
        (Orthanc storage, Prefect database, logs, credentials) under ``/srv/radflow/sites/lab``.
    """

    model_config = SettingsConfigDict(env_prefix="RADFLOW_", extra="ignore")

    home: Path = Field(
        default=Path("~/.radflow"),
        validate_default=True,
        description="Where sites and the hub keep their state, configuration and credentials "
                    "(always expanded and absolute: `~` and relative paths never reach a caller).",
        examples=["~/.radflow", "/srv/radflow"],
    )
    orthanc_binary: Path = Field(
        default=Path("/usr/sbin/Orthanc"),
        description="The Orthanc executable (Debian's package installs /usr/sbin/Orthanc).",
    )
    orthanc_plugins: Path = Field(
        default=Path("/usr/share/orthanc/plugins"),
        description="Folder of Orthanc plugins to load (Debian's DICOMweb plugin lives here).",
    )
    dcmtk_bin: Path = Field(
        default=Path("/usr/bin"),
        description="Folder holding DCMTK's storescu/echoscu (Debian's dcmtk package).",
    )
    columns_from: int = Field(
        default=20_000,
        description="Catalogs of at least this many series keep a columnar copy for cohort "
                    "queries (radflow.cohorts.columns); smaller ones answer in SQL.",
    )
    web_max_body_mb: float = Field(
        default=16.0, gt=0,
        description="The largest request body the web apps take, in MiB (413 above). The "
                    "largest legitimate one is the editor's SEG revision: about 15 KB per edited "
                    "512x512 slice (measured in chromium, three segments), 4.4 MB when every "
                    "slice of a 300-slice series is edited; 16 MiB leaves room for 1,100.",
    )
    ingest_idle_seconds: float = Field(
        default=30.0,
        description="How long an ingest run the watcher started waits for more series before "
                    "it ends. A waiting run holds one process; the next study after it ended "
                    "waits for a new flow run to start (a few seconds).",
        examples=[30.0, 600.0],
    )
    start_timeout: float = Field(
        default=90.0,
        description="Seconds to wait for each site component to become healthy.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        """``~/.radflow`` (the default) or a relative RADFLOW_HOME would otherwise become a
        folder named ``~`` (or one under whatever the current directory is) in the caller's
        hands; the home is resolved once, here, for everyone."""
        return value.expanduser().resolve()

    @property
    def home_dir(self) -> Path:
        """The expanded, absolute RADFLOW_HOME (the same as ``home``)."""
        return self.home


def get_settings() -> RadflowSettings:
    """Return the process settings, read from the environment now."""
    return RadflowSettings()
