"""The end-to-end tests again, with every database on PostgreSQL: a site 'alpha' whose Prefect
server, catalog (and worklist) and Orthanc index (Debian's orthanc-postgresql plugin) are
databases of the session's PostgreSQL cluster, and a hub whose database is one too.

The tests below are the SQLite suite's own functions, collected a second time here: in this
module ``radflow_home``, ``manager``, ``site`` and ``hub`` are the PostgreSQL ones, so ingest,
the site pipeline, review and the federated count run unchanged on the other engine."""

from __future__ import annotations

import os

import pytest
import requests
from conftest import reported, serving_hub, wait_settled

# the same tests, collected again (fixtures and tests, as they are)
from test_federation_e2e import joined, test_a_federated_count_through_the_agent  # noqa: F401
from test_ingest import odd_files, test_catalog_matches_orthanc_exactly  # noqa: F401
from test_pipeline import ct_cases, test_segment_and_quantify_end_to_end  # noqa: F401
from test_review import test_accept_resumes_the_run_and_quantifies_the_model_seg  # noqa: F401

from radflow.postgres import sync_url
from radflow.settings import RadflowSettings
from radflow.site import SiteManager

pytestmark = [pytest.mark.postgres, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def radflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("radflow-home-pg")
    old = os.environ.get("RADFLOW_HOME")
    os.environ["RADFLOW_HOME"] = str(home)
    yield home
    os.environ["RADFLOW_HOME"] = old if old is not None else ""
    if old is None:
        del os.environ["RADFLOW_HOME"]


@pytest.fixture(scope="module")
def manager(radflow_home):
    return SiteManager(RadflowSettings(home=radflow_home))


@pytest.fixture(scope="module")
def databases(postgres) -> dict[str, str]:
    return {part: postgres.create_database(f"alpha_{part}")
            for part in ("prefect", "catalog", "orthanc")}


@pytest.fixture(scope="module")
def site(manager, databases, request):
    manager.up("alpha", stable_age=2, database_url=databases["prefect"],
               catalog_url=databases["catalog"], orthanc_index_url=databases["orthanc"])
    yield manager.context("alpha")
    with reported(request, "the PostgreSQL site down"):
        manager.down("alpha")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, postgres):
    from sqlmodel import create_engine

    engine = create_engine(sync_url(postgres.create_database("hub")))
    with serving_hub(tmp_path_factory.mktemp("hub-pg"), engine) as served:
        yield served


def tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as connection:
        return {name for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def test_every_database_is_on_postgresql(site, databases, hub) -> None:
    """Nothing of the site is on SQLite: no database file in its folder, Orthanc reports the
    PostgreSQL index, and each database holds its component's tables."""
    wait_settled(site)
    assert site.catalog_url.startswith("postgresql+psycopg://")
    assert {"series", "review", "audit_event", "alembic_version"} <= tables(databases["catalog"])
    assert {"flow_run", "deployment", "work_pool"} <= tables(databases["prefect"])
    assert {"resources", "attachedfiles"} <= {t.lower() for t in tables(databases["orthanc"])}
    assert "hub_site" in set(hub["engine"].dialect.get_table_names(hub["engine"].connect()))
    files = [p.name for p in site.paths.root.rglob("*") if p.suffix in (".db", ".sqlite")
             and "idp" not in p.parts]
    assert files == []
    plugins = requests.get(f"{site.orthanc_url}/plugins", auth=site.orthanc_auth(),
                           timeout=5).json()
    assert "postgresql-index" in plugins
    system = requests.get(f"{site.orthanc_url}/system", auth=site.orthanc_auth(), timeout=5).json()
    assert "libOrthancPostgreSQLIndex.so" in system["DatabaseBackendPlugin"]
    # the secrets stay in the owner-only files: none in a log
    password = databases["catalog"].split(":")[2].split("@")[0]
    logs = [p for p in site.paths.logs.rglob("*") if p.is_file()]
    assert logs and not [p for p in logs if password in p.read_text(errors="replace")]
