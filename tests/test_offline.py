"""A site that is never online, in its parts: the signed envelope both ways, and joining and
enrolling by file (the whole trip runs in tests/test_federation_sites.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine

from radflow.errors import ConfigurationError
from radflow.federation.envelope import JOB, RELEASE, Refused, open_envelope, seal
from radflow.federation.offline import is_offline, join_offline
from radflow.federation.signing import generate
from radflow.hub import registry


@pytest.fixture
def keys(tmp_path):
    generate(tmp_path / "hub.key")
    generate(tmp_path / "site.key")
    return tmp_path / "hub.key", (tmp_path / "hub.key.pub").read_bytes(), \
        tmp_path / "site.key", (tmp_path / "site.key.pub").read_bytes()


def test_an_envelope_opens_only_as_sealed(keys) -> None:
    hub_key, hub_pub, site_key, site_pub = keys
    payload = {"job": {"id": "j1", "params": {"cohort": "CT"}}}
    data = seal(hub_key, JOB, "hub", "remote", payload)
    assert open_envelope(data, JOB, "remote", hub_pub) == payload
    cases = [
        (data.replace(b'"CT"', b'"MR"'), JOB, "remote", hub_pub, "bad_signature"),
        (data, JOB, "remote", site_pub, "bad_signature"),  # another key
        (data.replace(b'"to": "remote"', b'"to": "other"'), JOB, "other", hub_pub,
         "bad_signature"),  # re-addressed
        (data, JOB, "other", hub_pub, "wrong_receiver"),
        (data, RELEASE, "remote", hub_pub, "wrong_kind"),
        (data[: len(data) // 2], JOB, "remote", hub_pub, "unreadable"),  # cut short
        (data.replace(b'"format": 1', b'"format": 2'), JOB, "remote", hub_pub,
         "unsupported_format"),
        (b"\x89PNG not json", JOB, "remote", hub_pub, "unreadable"),
    ]
    for bad, kind, receiver, key, code in cases:
        with pytest.raises(Refused) as caught:
            open_envelope(bad, kind, receiver, key)
        assert caught.value.code == code and caught.value.fix, (code, caught.value.message)
    back = seal(site_key, RELEASE, "remote", "hub", {"job": "j1", "result": {"refusal": "x"}})
    assert open_envelope(back, RELEASE, "hub", site_pub)["job"] == "j1"


def test_joining_and_enrolling_by_file(keys, tmp_path) -> None:
    from radflow.builtin import AgentComponent

    _, hub_pub, _, _ = keys
    root = tmp_path / "sites" / "remote"
    with pytest.raises(ConfigurationError, match="no Ed25519 public key"):
        join_offline(root, "remote", b"not a key")
    info = join_offline(root, "remote", hub_pub)
    assert (root / "federation" / "hub.pub").read_bytes() == hub_pub
    assert json.loads((root / "federation" / "hub.json").read_text())["offline"] is True
    assert (root / "federation" / "site.key").stat().st_mode & 0o077 == 0
    assert is_offline(root)
    ctx = SimpleNamespace(paths=SimpleNamespace(root=root))
    assert AgentComponent().enabled(ctx) is False  # no hub to poll: no agent
    with pytest.raises(ConfigurationError, match="joined a hub already"):
        join_offline(root, "remote", hub_pub)

    engine = create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    registry.create(engine)
    code = registry.add_site(engine, "remote")
    row = registry.enrol(engine, "remote", code, info["public_key_pem"])
    assert row.status == "enrolled" and row.fingerprint == info["site_fingerprint"]
