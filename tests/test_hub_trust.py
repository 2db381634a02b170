"""The hub trusts nothing a site posts, through the real federation API (uvicorn on loopback)
with real site tokens: hand-made bad releases (wrong fields, NaN, strings, huge arrays, nested
junk, an oversized body) make the job ``invalid_release`` with a 422 (413 for the size) that
says why without echoing a value, the same post again gets the same answer, and a study with
one bad and one good site completes with the good one. The long poll's ``wait`` is finite and
capped, a waiting poll does not hold up other requests and wakes when a job comes; the API's
schema answers only a site's or a coordinator's token."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlmodel import Session
from test_hub_enrolment import PACKAGE, enrolled, published

from radflow.federation.client import HubClient
from radflow.hub import registry, study_jobs
from radflow.hub.models import HubJob
from radflow.hub.studies import run_study

pytestmark = [pytest.mark.services]
COHORT = {"cohort": {"version": 1, "where": {}}}


def post_raw(client: HubClient, job_id: str, text: bytes | str,
             token: str | None = None) -> requests.Response:
    """A hand-made result body (not through json.dumps: NaN and other junk stay as written)."""
    return requests.post(f"{client.info['url']}/v1/sites/{client.info['site']}/jobs/{job_id}"
                         "/result", data=text, timeout=60,
                         headers={"Authorization": f"Bearer {token or client.token()}",
                                  "Content-Type": "application/json"})


def job_row(hub, job_id: str) -> HubJob:
    with Session(hub["engine"]) as session:
        row = session.get(HubJob, job_id)
        session.expunge(row)
        return row


@pytest.fixture(scope="module")
def two_sites(hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    return {name: enrolled(hub, folder, name) for name in ("good", "bad")}, published(hub)


BAD = [
    ('{"release": {"n": 40}}', "schema"),                                  # a field missing
    ('{"release": {"n": 40, "matching": 3, "note": "x"}}', "schema"),      # one too many
    ('{"release": {"n": NaN, "matching": 3}}', "schema (field n)"),
    ('{"release": {"n": 40, "matching": Infinity}}', "schema (field matching)"),
    ('{"release": {"n": "40", "matching": 3}}', "free_text (field n)"),
    ('{"release": {"n": 40, "matching": "DOE^JANE"}}', "identifier (field matching)"),
    ('{"release": {"n": 40, "matching": 2.5}}', "schema (field matching)"),
    ('{"release": {"n": 40, "matching": [1, 2, 3]}}', "shape (field matching)"),
    ('{"release": {"n": 40, "matching": ' + json.dumps([list(range(500))] * 200) + "}}",
     "shape (field matching)"),                                           # a huge array
    ('{"release": {"n": 40, "matching": ' + "[" * 200 + "1" + "]" * 200 + "}}",
     "shape (field matching)"),                                           # nested junk
    ('{"release": {"n": 40, "matching": {"a": {"b": null}}}}', "shape (field matching)"),
    ('{"release": {"n": null, "matching": 3}}', "schema (field n)"),      # n is never blank
    ('{"release": {"n": 40, "matching": 99999999999999999999}}', "schema (field matching)"),
]


def test_bad_releases_become_the_jobs_invalid_release(hub, two_sites) -> None:
    sites, version = two_sites
    bad = sites["bad"]
    study, jobs = study_jobs.start_study(hub["engine"], "federated-cohort-count", COHORT,
                                         ["bad"] * len(BAD), 600)
    for (body, reason), job in zip(BAD, jobs, strict=True):
        answer = post_raw(bad, job.id, body)
        assert answer.status_code == 422, (body[:80], answer.text)
        assert answer.json() == {"error": "invalid_release", "reason": reason}, body[:80]
        row = job_row(hub, job.id)
        assert (row.status, row.refusal, row.reason, row.release) == (
            "invalid_release", "invalid_release", reason, None)
        assert "DOE" not in answer.text and "JANE" not in (row.reason or "")  # never echoed
    # the same post again: the same answer; another post for that job: a conflict
    again = post_raw(bad, jobs[2].id, BAD[2][0])
    assert again.status_code == 422 and again.json()["reason"] == BAD[2][1]
    other = bad.post(f"/jobs/{jobs[2].id}/result", {"release": {"n": 40, "matching": 3}})
    assert other.status_code == 409
    assert bad.post(f"/jobs/{jobs[3].id}/result", {"refusal": "declined"}).status_code == 409
    assert all(j["id"] not in {x.id for x in jobs} for j in bad.get("/jobs").json()["jobs"])
    # a policy summary is checked too: numbers are finite, strings short
    study2, (job2,) = study_jobs.start_study(hub["engine"], "federated-cohort-count", COHORT,
                                             ["bad"], 600)
    assert post_raw(bad, job2.id, '{"refusal": "declined", "policy": {"x": NaN}}') \
        .status_code == 422
    assert post_raw(bad, job2.id, json.dumps({"refusal": "declined",
                                              "policy": {"x": "y" * 65}})).status_code == 422
    assert job_row(hub, job2.id).status == "queued"  # a malformed request changes nothing
    assert bad.post(f"/jobs/{job2.id}/result", {"refusal": "declined"}).status_code == 200
    assert version.startswith("sha256:") and study.id != study2.id


def test_bodies_over_the_bound_are_refused_before_they_are_read(hub, two_sites) -> None:
    sites, _ = two_sites
    bad = sites["bad"]
    _, (job, other, roomy) = study_jobs.start_study(hub["engine"], "federated-cohort-count",
                                                    COHORT, ["bad"] * 3, 600)
    big = json.dumps({"release": {"n": 40, "matching": [0.5] * 300_000}})  # ~1.5 MiB
    assert len(big) > 1 << 20
    unauthenticated = requests.post(f"{hub['url']}/v1/sites/bad/jobs/{job.id}/result",
                                    data=big, timeout=60,
                                    headers={"Content-Type": "application/json"})
    assert unauthenticated.status_code == 413
    assert unauthenticated.json() == {"error": "body_too_large", "max_bytes": 1 << 20}
    assert job_row(hub, job.id).status == "queued"  # nobody known: just 413
    wrong_site = post_raw(bad, job.id, big, token=sites["good"].token())
    assert wrong_site.status_code == 413 and job_row(hub, job.id).status == "queued"

    # the site itself, on its own job's result route: a few MB are within that route's own
    # bound (a release with model weights), read and checked (here: no such field)
    roomy_answer = post_raw(bad, roomy.id, big)
    assert roomy_answer.status_code == 422, roomy_answer.text
    assert roomy_answer.json()["reason"] == "shape (field matching)"
    huge = b'{"release": ' + b" " * (16 << 20) + b"{}}"  # over max_release_bytes (16 MiB)
    answer = post_raw(bad, job.id, huge)  # its job's invalid_release
    assert answer.status_code == 413
    assert answer.json() == {"error": "body_too_large", "max_bytes": 16 << 20}
    row = job_row(hub, job.id)
    assert (row.status, row.reason) == ("invalid_release", "body_too_large (over 16777216 "
                                                           "bytes)")
    assert post_raw(bad, job.id, huge).status_code == 413  # again: the same answer

    def streamed():  # chunked: no Content-Length to judge by (16.25 MiB)
        for _ in range(260):
            yield b" " * 65536
        yield b'{"refusal": "declined"}'

    chunked = requests.post(f"{hub['url']}/v1/sites/bad/jobs/{other.id}/result",
                            data=streamed(), timeout=60,
                            headers={"Authorization": f"Bearer {bad.token()}",
                                     "Content-Type": "application/json"})
    assert chunked.status_code == 413 and job_row(hub, other.id).status == "invalid_release"
    small = requests.post(f"{hub['url']}/v1/enrol", data=(b" " * 100 + b"{}"), timeout=10)
    assert small.status_code == 422  # under the bound: the app reads it as before


WEIGHTS_FLOW = """name: weights-release
label: "1"
description: A release with model weights (a test of the hub's bound on a site's result).
site_entrypoint: site.py:count_cohort
plugins: [radflow]
parameter_schema:
  type: object
  properties:
    cohort: {type: object}
    parameters: {type: integer}
  required: [cohort, parameters]
release_schema:
  fields:
    n: {kind: count}
    weights: {kind: weights, shape: [parameters]}
resources: {cpus: 1, memory_gb: 1}
"""


def test_a_release_with_weights_of_a_few_mb_is_accepted(hub, two_sites, tmp_path) -> None:
    """fp16 weights of 1.4 M parameters (3.7 MB on the wire, over the general 1 MiB bound)
    reach the hub's inbox on the site's own result route and pass its check."""
    from radflow.federation.bundle import build
    from radflow.federation.manifest import sign_version
    from radflow.federation.signing import load
    from radflow.federation.weights import decode, encode, wire_bytes

    package = tmp_path / "weights-release"
    package.mkdir()
    shutil.copy(PACKAGE / "site.py", package / "site.py")
    (package / "radflow-flow.yaml").write_text(WEIGHTS_FLOW)
    manifest, bundle = build(package, publisher="test@hub")
    registry.publish(hub["engine"], sign_version(manifest, load(hub["folder"] / "hub.key")),
                     bundle)
    sites, _ = two_sites
    _, (job,) = study_jobs.start_study(hub["engine"], "weights-release",
                                       COHORT | {"parameters": 1_400_000}, ["good"], 600)
    weights = np.linspace(-1, 1, 1_400_000, dtype=np.float32)
    release = {"n": 40, "weights": encode(weights)}
    assert wire_bytes(release) > 3 << 20
    answer = sites["good"].post(f"/jobs/{job.id}/result", {"release": release})
    assert answer.status_code == 200, answer.text[:200]
    row = job_row(hub, job.id)
    assert row.status == "released"
    kept = decode(json.loads(row.release)["weights"])
    np.testing.assert_allclose(kept, weights, atol=1e-3)


def test_a_study_with_a_bad_site_completes_with_the_good_one(hub, two_sites,
                                                             tmp_path: Path) -> None:
    sites, _ = two_sites
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(run_study(
        hub["engine"], tmp_path, "federated-cohort-count", COHORT, ["bad", "good"],
        deadline_s=120, poll=0.1)))
    runner.start()
    answered: set[str] = set()
    try:
        while len(answered) < 2 and runner.is_alive():
            for name, client in sites.items():
                for job in client.get("/jobs", wait=2).json()["jobs"]:
                    if job["id"] in answered:
                        continue
                    if name == "good":
                        assert client.post(f"/jobs/{job['id']}/result", {
                            "release": {"n": 40, "matching": 12}}).status_code == 200
                    else:  # a count that is no count
                        assert post_raw(client, job["id"], '{"release": {"n": 40, '
                                        '"matching": -3}}').status_code == 422
                    answered.add(job["id"])
    finally:
        runner.join(180)
    assert not runner.is_alive() and len(answered) == 2
    by_site = {s["site"]: s for s in out["sites"]}
    assert by_site["good"]["status"] == "released"
    assert by_site["bad"] | {"policy": None} == {
        "site": "bad", "status": "invalid_release", "refusal": "invalid_release",
        "reason": "schema (field matching)", "policy": None}
    assert out["combined"]["matching"] == 12 and out["combined"]["sites_released"] == 1
    assert out["combined"]["sites_not_in"] == {"bad": "invalid_release"}
    report = (tmp_path / "studies" / out["study"] / "report.html").read_text()
    assert "invalid_release" in report and "schema (field matching)" in report


def test_the_long_poll_is_bounded_and_holds_nothing_up(hub, two_sites) -> None:
    sites, _ = two_sites
    good = sites["good"]
    for wait in ("nan", "inf", "-inf", "-1", "25.5", "1e9", "soon"):
        answer = good.get("/jobs", wait=wait)
        assert answer.status_code == 422, wait
    assert good.get("/jobs", wait="0").status_code == 200
    for job in good.get("/jobs").json()["jobs"]:  # none open: the poll waits
        good.post(f"/jobs/{job['id']}/result", {"refusal": "declined"})

    polls: list[dict] = []
    waiting = [threading.Thread(target=lambda: polls.append(good.get("/jobs", wait=25).json()))
               for _ in range(3)]
    for thread in waiting:
        thread.start()
    others = [requests.get(f"{hub['url']}/healthz", timeout=10).status_code for _ in range(20)]
    others.append(good.get("").status_code)  # the site's own other route
    assert others == [200] * 21 and all(t.is_alive() for t in waiting) and not polls
    _, (job,) = study_jobs.start_study(hub["engine"], "federated-cohort-count", COHORT,
                                       ["good"], 600)  # as the coordinator's worker queues it
    for thread in waiting:
        thread.join(30)
    assert [[j["id"] for j in p["jobs"]] for p in polls] == [[job.id]] * 3
    # a job the site said it knows does not end the wait; it is listed when the wait ends
    assert good.get("/jobs", wait=1, skip=job.id).json()["jobs"][0]["id"] == job.id


def test_the_api_schema_needs_a_token(hub, two_sites) -> None:
    sites, _ = two_sites
    url = f"{hub['url']}/openapi.json"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, timeout=10, headers={"Authorization": "Bearer made-up"}) \
        .status_code == 401
    for path in ("/docs", "/redoc"):
        assert requests.get(hub["url"] + path, timeout=10).status_code == 404
    site = requests.get(url, timeout=10,
                        headers={"Authorization": f"Bearer {sites['good'].token()}"})
    assert site.status_code == 200 and "/v1/sites/{name}/jobs" in site.json()["paths"]
    _, coordinator = registry.create_api_token(hub["engine"], "c.schema")
    assert requests.get(url, timeout=10, headers={"Authorization": f"Bearer {coordinator}"}) \
        .status_code == 200


def test_the_body_bound_is_configurable(monkeypatch, tmp_path: Path) -> None:
    from radflow.errors import ConfigurationError
    from radflow.hub.api import max_body_bytes, max_release_bytes
    from radflow.hub.home import HubHome

    monkeypatch.delenv("RADFLOW_HUB_MAX_BODY_BYTES", raising=False)
    home = HubHome(tmp_path)
    assert max_body_bytes() == max_body_bytes(home) == 1 << 20  # the default: 1 MiB
    monkeypatch.setenv("RADFLOW_HUB_MAX_BODY_BYTES", "4096")
    assert max_body_bytes(home) == 4096
    home.config_file.write_text(json.dumps({"max_body_bytes": 65536}))
    assert max_body_bytes(home) == 65536  # the hub's own setting first
    home.config_file.write_text(json.dumps({"max_body_bytes": "lots"}))
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        max_body_bytes(home)
    monkeypatch.delenv("RADFLOW_HUB_MAX_RELEASE_BYTES", raising=False)
    assert max_release_bytes() == 16 << 20  # a site's own result: its own bound
    monkeypatch.setenv("RADFLOW_HUB_MAX_RELEASE_BYTES", "8388608")
    assert max_release_bytes() == 8 << 20
