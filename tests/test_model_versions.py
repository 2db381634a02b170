"""A model a federated study trained, as a signed, approvable version: the hub publishes the
package, the site lists it verified against its pinned hub key, refuses to install it before a
steward approves it, refuses a package whose file does not match the signed manifest, installs
it, and a pipeline run with that model writes SEGs that name its version."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import send, wait_settled
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, DerivedResult
from radflow.errors import ConfigurationError
from radflow.federation.client import join
from radflow.federation.model_versions import MODEL_FILES, publish_model
from radflow.federation.policy import load_policy, policy_path
from radflow.hub import registry

pytestmark = [pytest.mark.services]
NAME, VERSION = "fed-test-model", "st-modeltest"


@pytest.fixture()
def offered(site, hub, tmp_path):
    """A model package published on the test hub, and alpha joined to it."""
    from radflow_nnunet.models import BUILTIN_DIR, models_home

    package = tmp_path / "model"
    for name in MODEL_FILES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUILTIN_DIR / "radflow-abdomen-demo" / name, package / name)
    card = json.loads((package / "radflow-model.json").read_text())
    card |= {"name": NAME, "version": VERSION,
             "federated": {"study": VERSION, "sites": ["alpha", "beta"], "rounds": 2}}
    (package / "radflow-model.json").write_text(json.dumps(card))
    signed = publish_model(hub["folder"] / "models", hub["folder"] / "hub.key", package,
                           study=VERSION)
    join(hub["url"], "alpha", registry.add_site(hub["engine"], "alpha"), site.paths.root)
    yield signed
    registry.revoke_site(hub["engine"], "alpha")
    shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
    policy_path(site.paths.root).unlink(missing_ok=True)
    shutil.rmtree(models_home() / NAME, ignore_errors=True)


def test_a_trained_model_is_offered_approved_installed_and_used(site, hub, offered, cli,
                                                                 synth_dir) -> None:
    model_hash = offered["hash"]
    rows = json.loads(cli("model", "versions", "--site", "alpha", "--json", check=True).stdout)
    (row,) = [r for r in rows if r["hash"] == model_hash]
    assert row["signature"] == "verified" and not row["approved"]
    assert row["name"] == NAME and row["federated"]["rounds"] == 2

    refused = cli("model", "install-version", model_hash, "--site", "alpha")
    assert refused.returncode != 0 and "not approved" in refused.stdout + refused.stderr
    cli("model", "approve", model_hash, "--site", "alpha", check=True)
    assert load_policy(site.paths.root).approved_models == [model_hash]
    assert "approved_models" not in load_policy(site.paths.root).summary()  # stays at the site

    # a file on the hub changed after signing: nothing is installed
    stored = hub["folder"] / "models" / model_hash.removeprefix("sha256:") / "plans.json"
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"{", b"{ ", 1))
    try:
        tampered = cli("model", "install-version", model_hash, "--site", "alpha")
        assert tampered.returncode != 0
        assert "does not match its signed manifest" in tampered.stdout + tampered.stderr
        assert NAME not in cli("model", "list", "--json", check=True).stdout
    finally:
        stored.write_bytes(original)

    out = json.loads(cli("model", "install-version", model_hash, "--site", "alpha", "--json",
                         check=True).stdout)
    assert out["name"] == NAME and out["version"] == VERSION and out["registered"]
    listed = {m["name"]: m for m in json.loads(cli("model", "list", "--json",
                                                    check=True).stdout)}
    assert listed[NAME]["version"] == VERSION
    with session_scope(site.catalog_url) as session:
        actions = [e.action for e in session.exec(select(AuditEvent))]
    assert "model.approved" in actions and "model.installed" in actions

    # the pipeline with the new model: its SEG names the model and its version
    wait_settled(site)
    send(site, synth_dir / "case_000")
    wait_settled(site)
    series = json.loads((synth_dir / "manifest.json").read_text())["cases"][0]["series_uid"]
    cli("pipeline", "run", "--site", "alpha", "--series", series, "--model", NAME, check=True,
        timeout=600)
    with session_scope(site.catalog_url) as session:
        made = [(r.algorithm, r.version) for r in session.exec(
            select(DerivedResult).where(DerivedResult.source_series_uid == series))]
    assert (NAME, VERSION) in made, made


def test_a_study_s_model_is_published_once_under_its_content_hash(tmp_path) -> None:
    from radflow.federation.model_versions import published
    from radflow.federation.signing import generate
    from radflow.hub.studies import publish_study_model
    from radflow_nnunet.models import BUILTIN_DIR

    hub_root = tmp_path / "hub"
    generate(hub_root / "keys" / "hub.key")  # as `radflow hub up` keeps it
    package = BUILTIN_DIR / "radflow-abdomen-demo"
    first = publish_study_model(hub_root, package, "st-1")
    again = publish_study_model(hub_root, package, "st-1")  # a resumed study publishes again
    assert first == again and first["name"] == "radflow-abdomen-demo"
    assert [s["hash"] for s in published(hub_root / "models")] == [first["hash"]]
    missing = tmp_path / "half"
    (missing / "fold_all").mkdir(parents=True)
    shutil.copy(package / "plans.json", missing / "plans.json")
    with pytest.raises(ConfigurationError, match="no model package"):
        publish_study_model(hub_root, missing, "st-2")
