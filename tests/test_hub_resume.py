"""The pieces that let a study outlive the hub's processes, without servers: a coordinator run
again with a study's id goes on from the hub database (tests/test_hub_faults.py kills a real
hub); the study's lock is let go of when its holder dies; the hub's token life setting."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import create_engine

from radflow.errors import ConfigurationError, FederationError
from radflow.federation.bundle import build
from radflow.federation.manifest import sign_version
from radflow.federation.signing import generate, load
from radflow.hub import registry, study_jobs
from radflow.hub.home import HubHome
from radflow.hub.recovery import StudyBusy, coordinated, coordinating
from radflow.hub.studies import run_study

TWO_ROUNDS = Path(__file__).parent / "data" / "flows" / "fault-two-rounds"
RELEASE = {"n": 9, "matching": 4}


@pytest.fixture()
def hub_db(tmp_path):
    """A hub database with fault-two-rounds published and sites s1, s2, s3 enrolled."""
    engine = create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    registry.create(engine)
    generate(tmp_path / "hub.key")
    manifest, bundle = build(TWO_ROUNDS, publisher="test@hub")
    registry.publish(engine, sign_version(manifest, load(tmp_path / "hub.key")), bundle)
    for name in ("s1", "s2", "s3"):
        generate(tmp_path / f"{name}.key")
        registry.enrol(engine, name, registry.add_site(engine, name),
                       (tmp_path / f"{name}.key.pub").read_text())
    return engine, tmp_path


def poll(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_coordinator_run_again_goes_on_from_the_hub_database(hub_db) -> None:
    engine, folder = hub_db
    params = {"cohort": {"all": []}}
    # where the first coordinator got before it died: round one answered by s1 and s2, s3's
    # job closed as missed; round two queued for s1 and s2, and s2 has answered
    study, jobs = study_jobs.start_study(engine, "fault-two-rounds", params, None, 600,
                                         round_params={"round": "first"})
    for job in jobs:
        if job.site != "s3":
            study_jobs.post_result(engine, job.site, job.id, RELEASE, None)
    study_jobs.close_round(engine, study.id, 0)
    second = study_jobs.queue_round(engine, study, 1, ["s1", "s2"], params | {"round": "second"})
    study_jobs.post_result(engine, "s2", second[1].id, RELEASE, None)

    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(run_study(
        engine, folder, "fault-two-rounds", params, deadline_s=600, poll=0.05,
        study_id=study.id)))
    runner.start()
    poll(lambda: coordinated(folder, study.id))
    with pytest.raises(StudyBusy, match="another live process"):  # never two coordinators
        run_study(engine, folder, "fault-two-rounds", params, study_id=study.id)
    study_jobs.post_result(engine, "s1", second[0].id, {"n": 9, "matching": 5}, None)
    runner.join(120)
    assert not runner.is_alive()  # the round closed before was not waited for again

    assert [r["round"] for r in out["rounds"]] == ["first", "second"]
    assert {s["site"]: s["status"] for s in out["sites"]} == {
        "s1": "released", "s2": "released", "s3": "missing"}
    assert out["combined"] == {"matching_first": 8, "sites_first": ["s1", "s2"],
                               "matching_second": 9, "sites_second": ["s1", "s2"]}
    assert [(j.round, j.site, j.status) for j in study_jobs.study_jobs(engine, study.id)] == [
        (0, "s1", "released"), (0, "s2", "released"), (0, "s3", "missed"),
        (1, "s1", "released"), (1, "s2", "released")]  # nothing queued twice
    written = folder / "studies" / study.id / "result.json"
    assert json.loads(written.read_text()) == out
    # a finished study, run again, is answered from its result (nothing is asked again)
    assert run_study(engine, folder, "fault-two-rounds", params, study_id=study.id) == out


def test_the_study_lock_is_let_go_when_its_holder_dies(tmp_path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from radflow.hub.recovery import coordinating\n"
        f"with coordinating(Path({str(tmp_path)!r}), 'abc123'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert coordinated(tmp_path, "abc123")
        with pytest.raises(StudyBusy), coordinating(tmp_path, "abc123"):
            pass
    finally:
        holder.kill()
        holder.wait(30)
        holder.stdout.close()
    assert not coordinated(tmp_path, "abc123")  # SIGKILL let it go
    with coordinating(tmp_path, "abc123"):
        assert coordinated(tmp_path, "abc123")  # (another open file: it sees the lock held)
    with pytest.raises(FederationError, match="not a study id"):
        coordinated(tmp_path, "../x")


def test_the_token_life_is_a_hub_setting(tmp_path, monkeypatch) -> None:
    from datetime import timedelta

    monkeypatch.delenv("RADFLOW_HUB_TOKEN_SECONDS", raising=False)
    home = HubHome(tmp_path)
    assert registry.token_lifetime() == registry.token_lifetime(home) == timedelta(minutes=5)
    monkeypatch.setenv("RADFLOW_HUB_TOKEN_SECONDS", "20")
    assert registry.token_lifetime(home) == timedelta(seconds=20)
    home.config_file.write_text(json.dumps({"token_seconds": 90}))
    assert registry.token_lifetime(home) == timedelta(seconds=90)  # the hub's own setting first
    for bad in ("soon", 0, 10**6):
        home.config_file.write_text(json.dumps({"token_seconds": bad}))
        with pytest.raises(ConfigurationError, match="token_seconds"):
            registry.token_lifetime(home)


class FlowRunsRefused(FederationError):
    """What the fake Prefect below raises when told to."""


class Starter:
    """The hub home as :func:`radflow.hub.studies.launch` uses it, with a Prefect that keeps
    what the hub database held when each coordinator run was created (or refuses to create)."""

    def __init__(self, engine, folder: Path, refuse: bool = False) -> None:
        self._engine, self.root, self.refuse, self.seen = engine, folder, refuse, []

    def engine(self):
        return self._engine

    def prefect(self):
        return self

    def create_flow_run(self, deployment: str, parameters: dict, tags: tuple = ()):
        jobs = study_jobs.study_jobs(self._engine, parameters["study_id"], 0)
        self.seen.append((deployment, parameters["study_id"], [(j.site, j.status) for j in jobs]))
        if self.refuse:
            raise FlowRunsRefused("the hub's Prefect is not answering", fix="radflow hub up")
        return type("Run", (), {"id": "run-1"})()

    def flow_run_ui(self, run_id: str) -> str:
        return f"http://127.0.0.1/runs/flow-run/{run_id}"


def test_a_single_round_study_is_queued_before_its_coordinator_run_starts(hub_db) -> None:
    """The sites start while the hub's worker starts the coordinator's process (seconds of the
    study's time): launch queues a single-round study's jobs itself, the coordinator run then
    follows them as a resumed one does and queues nothing more. A flow with a coordinator part
    of its own queues its first round itself (its code runs on the hub's worker only); a study
    whose coordinator run could not be created is gone, jobs and all."""
    from radflow.hub.studies import launch

    engine, folder = hub_db
    manifest, bundle = build(Path(__file__).parent.parent / "federation" / "flows"
                             / "federated-cohort-count", publisher="test@hub")
    registry.publish(engine, sign_version(manifest, load(folder / "hub.key")), bundle)
    params = {"cohort": {"all": [{"field": "modality", "op": "eq", "value": "CT"}]}}
    home = Starter(engine, folder)
    started = launch(home, "federated-cohort-count", params, None, 600, "cli:someone")
    ((deployment, study_id, jobs),) = home.seen
    assert deployment == "federated-study/federated-cohort-count" and study_id == started["study"]
    assert sorted(jobs) == [("s1", "queued"), ("s2", "queued"), ("s3", "queued")]
    assert study_jobs.study(engine, study_id).started_by == "cli:someone"

    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(run_study(
        engine, folder, "federated-cohort-count", params, deadline_s=600, poll=0.05,
        study_id=study_id)))
    runner.start()
    for job in study_jobs.study_jobs(engine, study_id, 0):
        study_jobs.post_result(engine, job.site, job.id, RELEASE, None)
    runner.join(120)
    assert not runner.is_alive()
    assert len(study_jobs.study_jobs(engine, study_id, 0)) == 3  # none queued twice
    assert out["combined"]["matching"] == 3 * RELEASE["matching"]
    assert out["started_by"] == "cli:someone"

    home = Starter(engine, folder)
    launch(home, "fault-two-rounds", {"cohort": {"all": []}}, None, 600, "cli:someone")
    assert home.seen[0][2] == []  # its coordinator queues its first round

    refused = Starter(engine, folder, refuse=True)
    with pytest.raises(FlowRunsRefused):
        launch(refused, "federated-cohort-count", params, ["s1"], 600, "cli:someone")
    ((_, gone, jobs),) = refused.seen
    assert jobs == [("s1", "queued")]
    assert study_jobs.study(engine, gone) is None and not study_jobs.study_jobs(engine, gone, 0)
