"""Errors: what is retried (only what may go away), the CLI's one line and fix with exit 1 for
every failure, the default site, and the service loop's failure policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radflow.errors import (
    ConfigurationError,
    DicomInputError,
    EmptyResult,
    OrthancError,
    PluginNotFound,
    PolicyViolation,
    PrefectUnavailable,
    is_transient,
)
from radflow.service import ServiceLoop
from radflow.tasks.retry import retry_transient

RADFLOW = str(Path(sys.executable).parent / "radflow")


@pytest.mark.parametrize("exc,transient", [
    (OrthancError("x", status=None, url="u"), True),
    (OrthancError("x", status=503, url="u"), True),
    (OrthancError("x", status=404, url="u"), False),
    (OrthancError("x", status=401, url="u"), False),
    (PrefectUnavailable("x"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (DicomInputError("x"), False),
    (ConfigurationError("unknown model"), False),
    (PluginNotFound("x"), False),
    (PolicyViolation("x"), False),
    (EmptyResult("x"), False),
    (ValueError("x"), False),
    (KeyError("x"), False),
])
def test_only_transient_failures_are_retried(exc: Exception, transient: bool) -> None:
    class State:
        def result(self, raise_on_failure: bool = True):
            raise exc

    assert is_transient(exc) is transient
    assert retry_transient(None, None, State()) is transient


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RADFLOW_HOME": str(home)}
    env.pop("RADFLOW_SITE", None)
    return subprocess.run([RADFLOW, *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def one_error(out: subprocess.CompletedProcess) -> tuple[str, str]:
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("fix: ")
    return lines[0], lines[1]


def offline_site(home: Path, name: str) -> None:
    """A site that exists (configuration, ports, secrets) but is not running."""
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager

    SiteManager(RadflowSettings(home=home))._create_or_update(name, {}, None, None, None)


def test_a_stopped_site_is_one_line_and_a_fix(tmp_path: Path) -> None:
    offline_site(tmp_path, "lab")
    error, fix = one_error(run("pipeline", "run", "--site", "lab", "--cohort", "x", home=tmp_path))
    assert "Prefect server of site 'lab'" in error and "did not answer" in error
    assert "radflow site up --site lab" in fix
    error, fix = one_error(run("catalog", "wait", "--site", "lab", "--timeout", "2", home=tmp_path))
    assert "did not answer" in error and "radflow site up" in fix


def test_usage_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    error, fix = one_error(run("cohort", "create", home=tmp_path))
    assert "Missing argument 'name'" in error and "radflow cohort create --help" in fix
    error, fix = one_error(run("site", "status", "--bogus", home=tmp_path))
    assert "No such option" in error


def test_the_only_site_is_the_default_and_several_are_listed(tmp_path: Path) -> None:
    error, fix = one_error(run("site", "credentials", home=tmp_path))
    assert "there is no site" in error and "radflow site up --site NAME" in fix
    offline_site(tmp_path, "lab")
    out = run("site", "credentials", "--json", home=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["orthanc"]["username"] == "radflow"
    offline_site(tmp_path, "clinic")
    error, fix = one_error(run("site", "credentials", home=tmp_path))
    assert "2 sites" in error and "clinic, lab" in error and "--site" in fix


class Flaky(ServiceLoop):
    def __init__(self, failures: list[BaseException | None], heartbeat: Path) -> None:
        super().__init__("flaky", heartbeat, dependencies=("orthanc",))
        self.failures = failures
        self.back = 0
        self.on_up("orthanc", lambda: setattr(self, "back", self.back + 1))

    def tick(self) -> None:
        self.guard("orthanc", self.work)

    def work(self) -> None:
        failure = self.failures.pop(0)
        if failure is not None:
            raise failure


def test_the_service_loop_tracks_dependencies_and_errors(tmp_path: Path) -> None:
    beat = tmp_path / "beat.json"
    loop = Flaky([OrthancError("refused", status=None, url="u"), None,
                  ConfigurationError("bad setting", fix="fix it"), None], beat)
    loop.step()
    assert json.loads(beat.read_text())["dependencies"] == {"orthanc": "down"}
    loop.step()
    assert loop.back == 1 and json.loads(beat.read_text())["dependencies"] == {"orthanc": "up"}
    loop.step()
    assert json.loads(beat.read_text())["last_error"] == "bad setting"
    loop.step()

    broken = Flaky([KeyError("bug")] * 3, beat)
    broken.max_unexpected = 3
    broken.step()
    broken.step()
    with pytest.raises(SystemExit):
        broken.step()


def test_a_dependency_going_down_is_in_the_heartbeat_before_the_tick_ends(tmp_path: Path) -> None:
    """What follows a failure may block for long (the agent's next poll retries a hub that is
    gone): the heartbeat says "down" as soon as the dependency is marked, not at the tick's
    end."""
    beat = tmp_path / "beat.json"
    seen: list[str] = []

    class Blocking(ServiceLoop):
        def __init__(self) -> None:
            super().__init__("blocking", beat, dependencies=("hub",))

        def tick(self) -> None:
            self.guard("hub", self.fail)
            seen.append(json.loads(beat.read_text())["dependencies"]["hub"])  # (still in the tick)
            self.guard("hub", lambda: None)
            seen.append(json.loads(beat.read_text())["dependencies"]["hub"])

        def fail(self) -> None:
            raise OrthancError("refused", status=None, url="u")

    Blocking().step()
    assert seen == ["down", "up"]
