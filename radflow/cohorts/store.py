"""Saved cohorts (per site, in the catalog)."""

from __future__ import annotations

from sqlmodel import Session, select

from radflow.catalog.models import CohortRecord
from radflow.cohorts.definition import CohortDefinition
from radflow.errors import ConfigurationError


def save_cohort(session: Session, name: str, definition: CohortDefinition, *,
                description: str | None = None, replace: bool = False) -> CohortRecord:
    """Save a cohort under ``name``. Saving the same definition again is a no-op; a different
    one under an existing name needs ``replace=True``."""
    existing = session.get(CohortRecord, name)
    if existing is not None and existing.content_hash != definition.content_hash and not replace:
        raise ConfigurationError(
            f"cohort {name!r} exists with another definition ({existing.content_hash[:19]}...)",
            fix="choose another name, or pass --replace to overwrite it",
        )
    record = existing or CohortRecord(name=name, definition="", content_hash="")
    record.definition = definition.canonical_json()
    record.content_hash = definition.content_hash
    record.description = description if description is not None else record.description
    session.add(record)
    return record


def load_cohort(session: Session, name: str) -> tuple[CohortDefinition, CohortRecord]:
    record = session.get(CohortRecord, name)
    if record is None:
        known = ", ".join(r.name for r in list_cohorts(session)) or "none"
        raise ConfigurationError(f"there is no cohort {name!r} (cohorts: {known})",
                                 fix="create it with `radflow cohort create NAME ...`")
    return CohortDefinition.parse(record.definition), record


def list_cohorts(session: Session) -> list[CohortRecord]:
    return list(session.exec(select(CohortRecord).order_by(CohortRecord.name)))


def delete_cohort(session: Session, name: str) -> None:
    _, record = load_cohort(session, name)
    session.delete(record)
