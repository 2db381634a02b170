"""The site catalog's tables, by domain:

* :mod:`~radflow.catalog.models.mirror`: what Orthanc holds (patients, studies, series,
  instances) and the findings about it. Identities follow Orthanc's: a row is keyed by its
  Orthanc identifier, and DICOM UIDs are indexed, not unique (Orthanc keeps one StudyInstanceUID
  under two patients as two studies, and so does the catalog; the conflict is a finding).
* :mod:`~radflow.catalog.models.ingest`: the change watcher's cursor and its ingest queue.
* :mod:`~radflow.catalog.models.results`: derived results (SEG, SR, feature tables) with their
  keys, statuses and lineage, and the feature values.
* :mod:`~radflow.catalog.models.cohorts`: saved cohorts and the membership pinned by runs.
* :mod:`~radflow.catalog.models.audit`: the site's append-only, hash-chained audit log.
* :mod:`~radflow.catalog.models.reviews`: review steps and their decisions.
* :mod:`~radflow.catalog.models.federation`: the site agent's hub jobs.
* :mod:`~radflow.catalog.models.web`: the web app's server-side sessions.
* :mod:`~radflow.catalog.models.outbox`: effects to deliver (hub posts, Prefect resumes).

The schema is created and upgraded by Alembic migrations (:mod:`radflow.catalog.migrate`).
"""

from radflow.catalog.models.audit import AuditEvent
from radflow.catalog.models.base import utcnow
from radflow.catalog.models.cohorts import CohortPin, CohortRecord
from radflow.catalog.models.federation import FederationJob
from radflow.catalog.models.ingest import IngestRequest, SettlingSeries, WatcherState
from radflow.catalog.models.mirror import (
                                          CatalogGeneration,
                                          Finding,
                                          Instance,
                                          Patient,
                                          Series,
                                          Study,
)
from radflow.catalog.models.outbox import OutboxEntry
from radflow.catalog.models.results import DerivedResult, FeatureValue
from radflow.catalog.models.reviews import Review
from radflow.catalog.models.web import WebSession

__all__ = ["AuditEvent", "CatalogGeneration", "CohortPin", "CohortRecord", "DerivedResult",
           "FeatureValue", "FederationJob", "Finding",
           "IngestRequest", "Instance", "OutboxEntry", "Patient", "Review", "Series",
           "SettlingSeries", "Study", "WatcherState", "WebSession", "utcnow"]
