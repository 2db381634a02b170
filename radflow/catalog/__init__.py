"""The site catalog (SQLModel): metadata of everything in Orthanc, findings, cohorts."""

from radflow.catalog.db import get_engine, session_scope

__all__ = ["get_engine", "session_scope"]
