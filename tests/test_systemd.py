"""systemd units for a site and the hub: written by `radflow site|hub install-service`, checked
with `systemd-analyze verify` (systemd 252, Debian 12), no secret in them."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

import pytest

from radflow.errors import ConfigurationError
from radflow.site.systemd import Limits, command_line, hub_unit, quote

ANALYZE = shutil.which("systemd-analyze")


def verify(path: Path) -> None:
    if ANALYZE is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    done = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True,
                          check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if path.name in line or "Unknown" in line or "Failed" in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


def test_arguments_survive_systemd_quoting() -> None:
    assert quote("/usr/bin/python3") == "/usr/bin/python3"
    assert quote("a b") == '"a b"'
    assert quote("100%") == "100%%"  # a specifier otherwise
    assert quote("$HOME") == "$$HOME"  # expanded otherwise
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert command_line(["/bin/x", "--site", "my site"]) == '/bin/x --site "my site"'


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="not a size"):
        Limits(memory_max="lots")
    with pytest.raises(ConfigurationError, match="percentage"):
        Limits(cpu_quota="1.5")


def test_the_site_unit_verifies_and_holds_no_secret(site, cli, tmp_path) -> None:
    out = tmp_path / "units"
    done = cli("site", "install-service", "--site", site.name, "--out", str(out),
               "--memory-max", "20G", "--cpu-quota", "180%", check=True)
    unit = out / f"radflow-site-{site.name}.service"
    assert str(unit) in done.stdout and "systemctl enable --now" in done.stdout
    text = unit.read_text()
    verify(unit)
    for line in ("Type=forking", "Restart=on-failure", "MemoryMax=20G", "CPUQuota=180%",
                 f"User={getpass.getuser()}", "ProtectSystem=full", "NoNewPrivileges=yes"):
        assert line in text.splitlines(), line
    assert f"-m radflow site up --site {site.name}" in text
    assert f"-m radflow site down --site {site.name}" in text
    assert f"PIDFile={site.paths.run / 'supervisor.main.pid'}" in text
    secrets = [site.secrets.orthanc_password.get_secret_value(),
               site.secrets.prefect_auth_string.get_secret_value(),
               *(s.get_secret_value() for s in site.secrets.demo_users.values())]
    assert not [s for s in secrets if s in text]
    # the supervisor writes the PID file systemd follows
    pid = int((site.paths.run / "supervisor.main.pid").read_text())
    status = {c.name: c for c in __import__("radflow.site", fromlist=["SiteManager"])
              .SiteManager().status(site.name).components}
    assert status["supervisor"].pid == pid


def test_the_hub_unit_verifies(tmp_path) -> None:
    unit = tmp_path / "radflow-hub.service"
    unit.write_text(hub_unit(tmp_path / "hub", tmp_path, limits=Limits(memory_max="4G")))
    verify(unit)
    assert "Type=oneshot" in unit.read_text() and "MemoryMax=4G" in unit.read_text()
