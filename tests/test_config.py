"""Pure logic: Orthanc config rendering, site names, ports, secrets."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest

from radflow.errors import ConfigurationError
from radflow.orthanc.config import DicomModality, OrthancConfig, render, write_config_dir
from radflow.site.config import (
    PORT_BASES,
    SiteConfig,
    SitePaths,
    SitePorts,
    aet_for,
    allocate_ports,
    check_site_name,
    load_or_create_secrets,
    save_config,
)


def sample_config(tmp_path: Path, **extra) -> OrthancConfig:
    return OrthancConfig(name="radflow-lab", aet="LAB", http_port=18042, dicom_port=14242,
                         storage_dir=tmp_path / "s", index_dir=tmp_path / "i",
                         plugins=[Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")],
                         username="radflow", password="pw-123", **extra)


def test_render_fills_every_placeholder_with_typed_values(tmp_path: Path) -> None:
    modality = DicomModality.parse("pacs=PACS01@10.0.0.5:104")
    cfg = render(sample_config(tmp_path, modalities=[modality]))
    assert "@" not in json.dumps(cfg)
    assert cfg["HttpPort"] == 18042 and cfg["DicomPort"] == 14242
    assert cfg["DicomAet"] == "LAB"
    assert cfg["AuthenticationEnabled"] is True
    assert cfg["RemoteAccessAllowed"] is False
    assert cfg["DicomAlwaysAllowStore"] is False
    assert cfg["DicomModalities"] == {"pacs": {"AET": "PACS01", "Host": "10.0.0.5", "Port": 104}}
    assert cfg["DicomWeb"]["Enable"] is True
    assert "RegisteredUsers" not in cfg  # secrets live in credentials.json only


def test_credentials_file_is_owner_only(tmp_path: Path) -> None:
    folder = write_config_dir(sample_config(tmp_path), tmp_path / "cfg")
    creds = folder / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert json.loads(creds.read_text()) == {"RegisteredUsers": {"radflow": "pw-123"}}
    assert "pw-123" not in (folder / "orthanc.json").read_text()


@pytest.mark.parametrize("spec", ["PACS@host", "pacs=@h:1", "A@h:port", "justtext"])
def test_bad_modality_spec_names_the_expected_form(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="NAME=AET@HOST:PORT"):
        DicomModality.parse(spec)


def test_modality_without_name_is_named_after_its_aet() -> None:
    assert DicomModality.parse("CT01@10.1.1.1:11112") == DicomModality("ct01", "CT01", "10.1.1.1", 11112)


@pytest.mark.parametrize("name", ["Lab", "1lab", "lab_1", "", "a" * 25, "lab site"])
def test_invalid_site_names_are_refused_with_a_fix(name: str) -> None:
    with pytest.raises(ConfigurationError, match="site name") as info:
        check_site_name(name)
    assert info.value.fix


def test_aet_is_derived_from_the_name() -> None:
    assert aet_for("uk-essen") == "UK_ESSEN"
    assert len(aet_for("a-very-long-site-name-x")) == 16


def test_ports_skip_busy_ones_and_those_of_other_sites(tmp_path: Path) -> None:
    home = tmp_path
    first = allocate_ports(home, {})
    other = SitePaths(home, "other")
    other.make()
    save_config(other, SiteConfig(name="other", aet="OTHER", ports=first))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        second = allocate_ports(home, {"orthanc_http": None, "prefect": None})
        explicit = allocate_ports(home, {"orthanc_http": port})
    assert set(first.model_dump().values()).isdisjoint(second.model_dump().values())
    assert explicit.orthanc_http == port  # an explicit port is taken as given (checked at start)
    assert len(set(second.model_dump().values())) == len(PORT_BASES)  # all distinct


def test_two_homes_choosing_at_once_get_different_ports(tmp_path: Path) -> None:
    """Two homes' sites created at the same moment (nothing listens yet) do not choose the same
    free ports: a choice is reserved machine-wide until its server binds; the reservations file
    is the user's own."""
    from radflow.site.config import port_reservations

    one = allocate_ports(tmp_path / "home-1", {})
    two = allocate_ports(tmp_path / "home-2", {})
    assert set(one.model_dump().values()).isdisjoint(two.model_dump().values())
    with port_reservations() as reserved:
        assert set(one.model_dump().values()) | set(two.model_dump().values()) <= set(reserved)
    held = Path(tempfile.gettempdir()) / f"radflow-ports-{os.getuid()}.json"
    assert held.stat().st_mode & 0o077 == 0


def test_secrets_are_generated_once_and_owner_only(tmp_path: Path) -> None:
    paths = SitePaths(tmp_path, "lab")
    paths.make()
    first = load_or_create_secrets(paths)
    again = load_or_create_secrets(paths)
    assert first.orthanc_password.get_secret_value() == again.orthanc_password.get_secret_value()
    assert len(first.orthanc_password.get_secret_value()) >= 24
    assert paths.secrets_file.stat().st_mode & 0o777 == 0o600
    assert "**" in repr(first)  # SecretStr never prints its value
    os.chmod(paths.secrets_file, 0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load_or_create_secrets(paths)


def test_site_config_round_trips(tmp_path: Path) -> None:
    paths = SitePaths(tmp_path, "lab")
    paths.make()
    config = SiteConfig(name="lab", aet="LAB", ports=SitePorts(orthanc_http=1, orthanc_dicom=2, prefect=3))
    save_config(paths, config)
    assert SiteConfig.model_validate_json(paths.config_file.read_text()) == config
    assert config.work_pool == "lab-process"
