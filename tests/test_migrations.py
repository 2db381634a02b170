"""Catalog migrations: a catalog with the schema and data of radflow before migrations existed
(commit 4f7e6ca, dumped with sqlite3's .dump) is upgraded in place with every row kept; a new
catalog gets the same schema as the models declare."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import ENGINES, new_database
from sqlmodel import SQLModel, select

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.migrate import current_revision, head
from radflow.catalog.models import (
    CohortRecord,
    DerivedResult,
    FeatureValue,
    Finding,
    IngestRequest,
    Instance,
    Patient,
    Series,
    Study,
    WatcherState,
)
from radflow.enums import ResultStatus, SeriesStatus

OLD = Path(__file__).parent / "data" / "catalog-4f7e6ca.sql"


def old_catalog(tmp_path: Path) -> str:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(OLD.read_text())
    connection.close()
    return f"sqlite:///{path}"


def test_an_old_catalog_is_upgraded_with_every_row(tmp_path: Path) -> None:
    url = old_catalog(tmp_path)
    assert current_revision(url) is None
    get_engine(url)
    assert current_revision(url) == head()
    with session_scope(url) as session:
        count = {m.__name__: len(session.exec(select(m)).all()) for m in (
            Patient, Study, Series, Instance, Finding, WatcherState, IngestRequest, CohortRecord,
            DerivedResult, FeatureValue)}
        assert count == {"Patient": 1, "Study": 1, "Series": 2, "Instance": 4, "Finding": 1,
                         "WatcherState": 2, "IngestRequest": 1, "CohortRecord": 1,
                         "DerivedResult": 2, "FeatureValue": 2}
        ct = session.exec(select(Series).where(Series.modality == "CT")).one()
        assert ct.status == SeriesStatus.OK and ct.kvp == 120 and ct.num_instances == 3
        seg, sr = sorted(session.exec(select(DerivedResult)), key=lambda r: r.id)
        assert (seg.kind, sr.kind) == ("SEG", "SR") and seg.status == ResultStatus.DRAFT
        assert sr.derived_from_id == seg.id and json.loads(sr.inputs) == [ct.series_uid, "2.25.112"]
        assert seg.source_orthanc_id == "series-orthanc-ct" and seg.params_hash == "legacy"
        values = {f.feature: f.value for f in session.exec(select(FeatureValue))}
        assert values == {"original_shape_VoxelVolume": 1500000.0, "original_firstorder_Mean": 61.5}
        assert session.get(WatcherState, "orthanc-changes").last_seq == 42
    get_engine.cache_clear()
    get_engine(url)  # upgrading again changes nothing
    assert current_revision(url) == head()


# Alembic cannot compare indexes on expressions (the dashboard's facet indexes): SQLAlchemy says
# so when it reflects them; tests/test_facets.py checks that they exist and are used.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_catalog_matches_the_models(request, engine: str, tmp_path: Path) -> None:
    urls = [new_database(request, engine, tmp_path, "new")]
    if engine == "sqlite":
        urls.append(old_catalog(tmp_path))
    for url in urls:
        with get_engine(url).connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        # PostgreSQL reflects the facet indexes, but cannot compare their expressions
        assert [d for d in diff if not (d[0] in ("add_index", "remove_index")
                                        and d[1].name.startswith("ix_series_facet_"))] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_the_migrations_go_down_and_up_again(request, engine: str, tmp_path: Path) -> None:
    """Each engine: head, down to 0002 (phase 4 cannot be undone: restore a backup), then up to
    head again. The downgrades are real code, and PostgreSQL runs DDL in transactions."""
    from alembic import command

    from radflow.catalog.migrate import _config, head

    url = new_database(request, engine, tmp_path, "roundtrip")
    with get_engine(url).connect() as connection:
        command.downgrade(_config(connection), "0002")
        connection.commit()
    assert current_revision(url) == "0002"
    get_engine.cache_clear()
    assert current_revision(get_engine(url)) == head()


def test_a_catalog_from_a_newer_radflow_is_refused(tmp_path: Path) -> None:
    import pytest

    from radflow.errors import ConfigurationError

    url = f"sqlite:///{tmp_path / 'future.db'}"
    get_engine(url)
    connection = sqlite3.connect(tmp_path / "future.db")
    connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.commit()
    connection.close()
    get_engine.cache_clear()
    with pytest.raises(ConfigurationError, match="revision 9999, which this radflow does not know"):
        get_engine(url)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_hub_database_is_migrated_and_matches_its_models(request, engine: str,
                                                             tmp_path: Path) -> None:
    """A new hub database gets the same schema as the hub's models declare; one made with
    create_all before migrations (phase 6's first commits) is stamped and kept, rows and all."""
    from sqlmodel import create_engine

    from radflow.hub import registry
    from radflow.hub.models import HubModel

    fresh = create_engine(new_database(request, engine, tmp_path, "hub"))
    assert registry.create(fresh) == head(registry.MIGRATIONS)
    with fresh.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), HubModel.metadata) == []
    legacy = create_engine(new_database(request, engine, tmp_path, "legacy"))
    from alembic import command

    from radflow.catalog.migrate import _config

    with legacy.connect() as connection:  # the schema of 0001, as create_all made it then
        command.upgrade(_config(connection, registry.MIGRATIONS), "0001")
        connection.exec_driver_sql("DROP TABLE alembic_version")
        connection.commit()
    with legacy.connect() as connection:  # a row as that schema held it (no later column)
        connection.exec_driver_sql("INSERT INTO hub_site (name, status, created_at) VALUES "
                                   "('essen', 'enrolled', CURRENT_TIMESTAMP)")
        connection.commit()
    assert current_revision(legacy) is None
    registry.create(legacy)
    assert current_revision(legacy) == head(registry.MIGRATIONS)
    assert [s.name for s in registry.sites(legacy)] == ["essen"]
