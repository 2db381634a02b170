"""A de-identified export of a cohort from the site's Orthanc (issue 26, item 2): a CT with
identifiers planted in it, its SEG (imported as an accepted label) and its SR (a current
result), exported by `radflow export run` after the steward's approval to a folder, a zip
and a second Orthanc over STOW-RS; re-identified by the steward, audited throughout."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import time
import zipfile

import pydicom
import pytest
import requests
from conftest import RADFLOW, dciodvfy, free_port, send, wait_settled
from sqlmodel import select
from test_deidentify import OPTIONS_CHOSEN, planted_strings, source  # noqa: F401 (a fixture)
from test_worklist import app_url, log_in

from radflow.catalog.db import session_scope
from radflow.catalog.models import Series
from radflow.enums import ResultKind, ResultStatus
from radflow.results import store
from radflow.results.keys import ResultKey

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def partner(site, tmp_path_factory):
    """A second Orthanc (the trusted third party's), DICOMweb on, authentication on."""
    root = tmp_path_factory.mktemp("partner-orthanc")
    port, password = free_port(), secrets.token_hex(12)
    settings = site.settings
    config = {"Name": "partner", "StorageDirectory": str(root / "db"),
              "IndexDirectory": str(root / "db"), "HttpPort": port, "DicomServerEnabled": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
              "RegisteredUsers": {"partner": password},
              "Plugins": [str(settings.orthanc_plugins / "libOrthancDicomWeb.so")],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("w")
    proc = subprocess.Popen([str(settings.orthanc_binary), str(root / "orthanc.json")],
                            stdout=log, stderr=subprocess.STDOUT)
    url, auth = f"http://127.0.0.1:{port}", ("partner", password)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/system", auth=auth, timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, (root / "orthanc.log").read_text()
        time.sleep(0.2)
    yield {"url": url, "auth": auth}
    proc.terminate()
    proc.wait(30)


def put_in_site(site, orthanc, made: dict) -> str:
    """The CT in Orthanc and cataloged, its SEG an accepted label, its SR a current result;
    returns the CT's series UID."""
    ct_dir = made["files"][0].parent
    wait_settled(site)
    send(site, ct_dir)
    wait_settled(site)
    ct_uid = str(pydicom.dcmread(made["files"][0], stop_before_pixels=True).SeriesInstanceUID)
    proc = subprocess.run([*RADFLOW, "data", "import-labels", str(made["seg"]), "--site",
                           site.name], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sr = pydicom.dcmread(made["sr"])
    stored = orthanc.upload_bytes(made["sr"].read_bytes())
    seg = pydicom.dcmread(made["seg"], stop_before_pixels=True)
    with session_scope(site.catalog_url) as session:
        series = session.exec(select(Series).where(Series.series_uid == ct_uid)).one()
        ref = orthanc.get_series(series.orthanc_id)
        key = ResultKey(ResultKind.SR, (ct_uid, str(seg.SOPInstanceUID)), "pyradiomics", "3.0.1")
        row = store.record(session, key, ref, orthanc_id=stored.instance_id,
                           sop_instance_uid=str(sr.SOPInstanceUID), series_uid=str(sr.SeriesInstanceUID))
        store.set_status(session, row.id, ResultStatus.ACCEPTED, by="test", reason="test")
    return ct_uid


@pytest.fixture(scope="module")
def prepared(site, source) -> dict:  # noqa: F811
    """The case in the site (CT, SEG, SR), a cohort of it and an export project."""
    from conftest import run_cli as cli

    put_in_site(site, site.orthanc_client(), source)
    cohort = f"export-{secrets.token_hex(3)}"
    cli("cohort", "create", cohort, "-f", "series_description~zyxplant", "--site", site.name,
        check=True)
    project = f"reader-{secrets.token_hex(3)}"
    cli("export", "project", "create", project, *[a for o in OPTIONS_CHOSEN for a in ("-o", o)],
        "--purpose", "a reader study at a partner", "--site", site.name, check=True)
    return {"cohort": cohort, "project": project, "instances": len(source["files"])}


def test_a_cohort_leaves_de_identified_after_the_stewards_approval(
        site, cli, source, prepared, partner, browser, shots, tmp_path) -> None:  # noqa: F811
    cohort, project = prepared["cohort"], prepared["project"]

    # the policy asks for a steward: the request waits, and says what would leave
    folder = tmp_path / "set"
    asked = json.loads(cli("export", "run", project, "--cohort", cohort, "--to",
                           f"folder:{folder}", "--site", site.name, "--json", check=True).stdout)
    assert asked["state"] == "waiting" and not folder.exists()
    assert asked["plan"]["by_modality"] == {"CT": 1}
    assert sorted(r["kind"] for r in asked["plan"]["results"]) == ["SEG", "SR"]
    early = cli("export", "run", project, "--request", asked["id"], "--site", site.name)
    assert early.returncode != 0 and "radflow export approve" in early.stderr
    shown = cli("export", "show", asked["id"], "--site", site.name, check=True).stdout
    assert "1 series (1 CT), 1 SEG, 1 SR" in shown and "series_description" in shown
    # the steward sees it on the Federation page, and approves it there
    steward = log_in(browser, site, "steward", "/federation")
    card = f".export-request[data-export='{asked['id']}']"
    text = steward.inner_text(card)
    assert "a reader study at a partner" in text and "1 series (1 CT), 1 SEG, 1 SR" in text
    assert steward.inner_text(f"{card} .cohort") == asked["plan"]["cohort_in_words"]
    assert f"folder:{folder}" in text and "clean-structured-content" in text
    steward.locator(card).scroll_into_view_if_needed()
    steward.screenshot(path=str(shots / "federation-export.png"), full_page=True)
    steward.click(f"{card} button[value=approve]")
    steward.wait_for_url(f"{app_url(site)}/federation#exports")
    assert "approved" in steward.inner_text(".flash")
    steward.context.close()
    assert cli("export", "show", asked["id"], "--site", site.name, "--json",
               check=True).stdout.count('"approved"') >= 1
    done = json.loads(cli("export", "run", project, "--request", asked["id"], "--site",
                          site.name, "--json", check=True).stdout)
    assert done["state"] == "done" and done["result"]["held_back"] == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["instances"] == len(source["files"]) == done["result"]["instances"]
    assert manifest["cohort_hash"] == asked["plan"]["cohort_hash"]
    files = [folder / f["path"] for f in manifest["files"]]
    planted = planted_strings(source["study_date"])
    for path in files:
        assert dciodvfy(path)[0] == [], path.name
        data = path.read_bytes().lower()
        assert not [w for w in planted if w.lower().encode() in data], path.name
    again = cli("export", "run", project, "--request", asked["id"], "--site", site.name)
    assert again.returncode != 0 and "is done" in again.stderr

    # to a zip and to the partner's Orthanc (policy off: no steward), the same pseudonyms
    cli("site", "policy", "set", "export_requires_steward=false", "--site", site.name, check=True)
    try:
        zipped = tmp_path / "set.zip"
        cli("export", "run", project, "--cohort", cohort, "--to", f"zip:{zipped}", "--site",
            site.name, check=True)
        with zipfile.ZipFile(zipped) as archive:
            assert sorted(archive.namelist()) == sorted(
                [f["path"] for f in manifest["files"]] + ["manifest.json"])
        env = {**os.environ, "RADFLOW_EXPORT_USERNAME": partner["auth"][0],
               "RADFLOW_EXPORT_PASSWORD": partner["auth"][1]}
        proc = subprocess.run([*RADFLOW, "export", "run", project, "--cohort", cohort, "--to",
                               f"dicomweb:{partner['url']}/dicom-web", "--site", site.name,
                               "--json"], env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert partner["auth"][1] not in proc.stdout + proc.stderr
    finally:
        cli("site", "policy", "set", "export_requires_steward=true", "--site", site.name,
            check=True)
    there = requests.get(f"{partner['url']}/instances?expand", auth=partner["auth"],
                         timeout=30).json()
    assert len(there) == len(files)
    ours = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in there} == ours
    ct = pydicom.dcmread(next(p for p in files if "CT" in pydicom.dcmread(
        p, stop_before_pixels=True).Modality))
    first = there[0]["ID"]
    tags = requests.get(f"{partner['url']}/instances/{first}/simplified-tags",
                        auth=partner["auth"], timeout=30).json()
    assert tags["PatientID"] == str(ct.PatientID) and tags["PatientIdentityRemoved"] == "YES"

    # the steward re-identifies a pseudonym, audited before the answer
    found = json.loads(cli("export", "reidentify", str(ct.PatientID), "--project", project,
                           "--reason", "an incidental finding to report", "--site", site.name,
                           "--json", check=True).stdout)
    assert found["patient_id"] == "MRN5550123" and asked["id"] in found["exports"]
    mapping = site.paths.root / "export" / "mapping" / f"{project}.bin"
    assert b"MRN5550123" not in mapping.read_bytes()  # encrypted at rest
    from radflow import audit
    actions = [e.action for e in audit.events(site.catalog_url)
               if e.subject in (f"export:{asked['id']}", f"export-project:{project}")]
    assert actions == ["export.project", "export.requested", "export.approved",
                       "export.started", "export.done", "export.reidentified"]
    events = list(audit.events(site.catalog_url))
    done_event = next(e for e in events if e.action == "export.done"
                      and e.subject == f"export:{asked['id']}")
    assert json.loads(done_event.detail)["manifest_sha256"] == done["result"]["manifest_sha256"]


def test_a_researcher_exports_from_the_cohorts_page(site, prepared, browser, shots) -> None:
    """Explore's cohort page: a researcher files the export, the steward approves it on the
    Federation page, it runs on the site's worker with its progress on the cohort's page, and
    the researcher downloads the zip; a radiologist may not export."""
    from test_worklist import cookies

    cohort, project = prepared["cohort"], prepared["project"]
    researcher = log_in(browser, site, "researcher", f"/cohorts/{cohort}")
    researcher.select_option("#export-project", project)
    researcher.click("#export button[type=submit]")
    researcher.wait_for_url(f"{app_url(site)}/cohorts/{cohort}#exports")
    assert "waits for a data steward" in researcher.inner_text(".flash")
    row = researcher.locator("#exportrows tr").first
    export_id = row.get_attribute("data-export")
    assert "waiting" in row.inner_text()

    steward = log_in(browser, site, "steward", "/federation")
    steward.click(f".export-request[data-export='{export_id}'] button[value=approve]")
    steward.wait_for_url(f"{app_url(site)}/federation#exports")
    assert "runs on the site's worker" in steward.inner_text(".flash")
    steward.context.close()

    researcher.reload()
    researcher.wait_for_selector(f"#exportrows tr[data-export='{export_id}'] .link a",
                                 timeout=180_000)  # the page polls until the zip is there
    assert "done" in researcher.inner_text(f"#exportrows tr[data-export='{export_id}'] .state")
    researcher.screenshot(path=str(shots / "explore-export.png"), full_page=True)
    answer = cookies(researcher).get(f"{app_url(site)}/exports/{export_id}/download", timeout=60)
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["project"] == project and manifest["instances"] == prepared["instances"]
        for name in archive.namelist():
            assert b"MRN5550123" not in archive.read(name)
    researcher.context.close()

    radiologist = log_in(browser, site, "radiologist", f"/cohorts/{cohort}")
    assert radiologist.locator("#no-export").count() == 1
    assert cookies(radiologist).get(f"{app_url(site)}/exports/{export_id}/download",
                                    timeout=30).status_code == 403
    radiologist.context.close()
    from radflow import audit
    actions = [e.action for e in audit.events(site.catalog_url) if e.subject == f"export:{export_id}"]
    assert actions == ["export.requested", "export.approved", "export.started", "export.done",
                       "export.downloaded"]


def test_an_export_killed_while_it_runs_runs_again(site, cli, prepared, tmp_path) -> None:
    """The export's process killed after export.started: the request says running, by a dead
    process; the same command runs it again to the end (a live run is never run twice)."""
    import signal

    from radflow import audit
    from radflow.export import run

    cli("site", "policy", "set", "export_requires_steward=false", "--site", site.name, check=True)
    try:
        entry = run.request(site.paths.root, site.catalog_url, project=prepared["project"],
                            cohort=prepared["cohort"], target=f"zip:{tmp_path / 'again.zip'}",
                            actor="cli:test", requires_steward=False)
    finally:
        cli("site", "policy", "set", "export_requires_steward=true", "--site", site.name,
            check=True)
    assert entry["state"] == "approved"  # no steward asked
    proc = subprocess.Popen([*RADFLOW, "export", "run", prepared["project"], "--request",
                             entry["id"], "--site", site.name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while run.load(site.paths.root, entry["id"])["state"] != "running":
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes
    proc.wait(30)
    left = run.load(site.paths.root, entry["id"])
    assert left["state"] == "running" and left["runner"]["pid"] == proc.pid
    assert not (tmp_path / "again.zip").exists()
    done = json.loads(cli("export", "run", prepared["project"], "--request", entry["id"],
                          "--site", site.name, "--json", check=True).stdout)
    assert done["state"] == "done" and done["result"]["instances"] == prepared["instances"]
    with zipfile.ZipFile(tmp_path / "again.zip") as archive:
        assert len(archive.namelist()) == prepared["instances"] + 1
    actions = [e.action for e in audit.events(site.catalog_url)
               if e.subject == f"export:{entry['id']}"]
    assert actions == ["export.requested", "export.started", "export.started", "export.done"]
    again = cli("export", "run", prepared["project"], "--request", entry["id"], "--site",
                site.name)
    assert again.returncode != 0 and "is done" in again.stderr
