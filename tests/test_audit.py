"""The site audit log: appended in order by concurrent writers, verified, exported, and any
change, removal or reordering detected."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radflow.audit import GENESIS, record, verify
from radflow.errors import ConfigurationError

RADFLOW = str(Path(sys.executable).parent / "radflow")


@pytest.fixture()
def catalog(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def test_concurrent_writers_keep_one_chain(catalog: str) -> None:
    assert verify(catalog).head == GENESIS
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda k: record(catalog, actor=f"user-{k % 3}", action="test.event",
                                       subject=f"result:{k}", detail={"k": k}), range(40)))
    check = verify(catalog)
    assert check.ok and check.events == 40 and check.head != GENESIS
    with pytest.raises(ConfigurationError, match="needs an actor"):
        record(catalog, actor="", action="x", subject="y")


@pytest.mark.parametrize("tamper,reason", [
    ("UPDATE audit_event SET detail = '{\"k\":99}' WHERE seq = 3", "content does not match"),
    ("DELETE FROM audit_event WHERE seq = 3", "event 3 is missing"),
    ("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 5", "content does not match"),
])
def test_a_tampered_log_is_detected(catalog: str, tmp_path: Path, tamper: str,
                                    reason: str) -> None:
    for k in range(6):
        record(catalog, actor="dr-a", action="review.decided", subject=f"result:{k}",
               detail={"k": k})
    connection = sqlite3.connect(tmp_path / "catalog.db")
    connection.execute(tamper)
    connection.commit()
    connection.close()
    check = verify(catalog)
    assert not check.ok and reason in check.reason and check.broken_at in (3, 5)


def test_cli_verify_and_export(tmp_path: Path) -> None:
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager

    ctx = SiteManager(RadflowSettings(home=tmp_path))._create_or_update("lab", {}, None, None,
                                                                          None)
    for k in range(3):
        record(ctx.catalog_url, actor="dr-a", action="review.decided", subject=f"result:{k}")
    env = {**os.environ, "RADFLOW_HOME": str(tmp_path)}
    out = subprocess.run([RADFLOW, "site", "audit", "verify", "--json"], env=env, check=True,
                         capture_output=True, text=True)
    assert json.loads(out.stdout)["ok"] and json.loads(out.stdout)["events"] == 3
    exported = subprocess.run([RADFLOW, "site", "audit", "export"], env=env, check=True,
                              capture_output=True, text=True).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in exported] == [1, 2, 3]
    assert json.loads(exported[-1])["hash"] == json.loads(out.stdout)["head"]
    connection = sqlite3.connect(ctx.paths.root / "catalog.db")
    connection.execute("UPDATE audit_event SET subject = 'result:9' WHERE seq = 2")
    connection.commit()
    connection.close()
    broken = subprocess.run([RADFLOW, "site", "audit", "verify"], env=env, capture_output=True,
                            text=True, check=False)
    assert broken.returncode == 1 and "broken at event 2" in broken.stdout
