"""A site that is never online, over the hub and three sites of tests/test_federation_sites.py:
delta's agent is stopped (no link to the hub), its job goes to it as a signed file and its
release comes back as one; the study's combined result is the one all three give online. A
tampered or replayed file is refused with its reason, and audited, at both ends."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import RADFLOW
from federation_checks import audit_actions, poll, pooled

from radflow.cohorts.definition import parse_short
from radflow.federation.policy import SitePolicy, save_policy

FLOW = "federated-cohort-count"
PACKAGE = "federation/flows/federated-cohort-count"


def tampered(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


def never_online(federation, cli, manager, tmp_path) -> None:
    from radflow.site.components import component

    hub_cli, sites, hub_home = federation["hub_cli"], federation["sites"], federation["hub_home"]
    hub_env = {**os.environ, "RADFLOW_HOME": str(hub_home)}
    version = hub_cli("publish", PACKAGE)["hash"]
    cohort = parse_short(["modality=CT"])
    cohort_file = tmp_path / "ct.json"
    cohort_file.write_text(cohort.canonical_json())
    for ctx in sites.values():
        save_policy(ctx.paths.root, SitePolicy(approved=[version], job_mode="auto",
                                               min_cohort=2, min_cell=2))
    # (the hub's readiness reads the sites' reports: epsilon's without its access rule)
    poll(lambda: not next(r for r in hub_cli("hub", "fleet") if r["site"] == "epsilon")[
        "policy"].get("require_access_request"), 60, "epsilon's report of its new policy")
    delta = sites["delta"]
    component("agent").process(delta).stop()  # delta has no link to the hub from here on
    try:
        started = hub_cli("study", "run", FLOW, "--cohort", str(cohort_file), "--deadline",
                          "600", "--no-wait")
        job_file, release_file = tmp_path / "delta-job.json", tmp_path / "delta-release.json"
        exported = poll(lambda: subprocess.run(
            [*RADFLOW, "hub", "job", "export", started["study"], "--site", "delta", "--out",
             str(job_file), "--json"], env=hub_env, capture_output=True, text=True,
            timeout=120, check=False).returncode == 0, 60, "delta's job in the study")
        assert exported and job_file.exists()
        envelope = json.loads(job_file.read_text())
        assert (envelope["kind"], envelope["from"], envelope["to"]) == ("radflow.job", "hub",
                                                                        "delta")
        assert envelope["payload"]["job"]["params"]["cohort"] == cohort.canonical()
        data = job_file.read_bytes()

        # a job file changed on the way is refused at the site, and audited there
        changed = tmp_path / "changed-job.json"
        changed.write_bytes(tampered(data, b'"CT"', b'"MR"'))
        refused = cli("site", "job", "import", str(changed), "--out", str(release_file),
                      "--site", "delta")
        assert refused.returncode == 2 and "bad_signature" in refused.stderr, refused.stderr
        other = tmp_path / "for-epsilon.json"
        other.write_bytes(tampered(data, b'"to": "delta"', b'"to": "epsilon"'))
        refused = cli("site", "job", "import", str(other), "--out", str(release_file),
                      "--site", "epsilon")
        assert refused.returncode == 2 and "bad_signature" in refused.stderr, refused.stderr
        assert audit_actions(delta).count("federation.import_refused") == 1
        assert not release_file.exists()

        done = cli("site", "job", "import", str(job_file), "--out", str(release_file),
                   "--site", "delta", "--json", check=True)
        said = json.loads(done.stdout)
        assert said["outcome"] == "released" and release_file.exists()
        assert "federation.imported" in audit_actions(delta)
        assert audit_actions(delta)[-1] == "federation.released"
        again = cli("site", "job", "import", str(job_file), "--out", str(tmp_path / "x.json"),
                    "--site", "delta")
        assert again.returncode == 2 and "replayed" in again.stderr, again.stderr
        assert audit_actions(delta).count("federation.import_refused") == 2

        release = release_file.read_bytes()
        local = {name: pooled(ctx, cohort) for name, ctx in sites.items()}
        assert json.loads(release)["payload"]["result"]["release"] == {
            "n": local["delta"][0], "matching": local["delta"][1]}
        forged = tmp_path / "forged-release.json"
        forged.write_bytes(tampered(release, f'"matching": {local["delta"][1]}'.encode(),
                                    f'"matching": {local["delta"][1] + 7}'.encode()))
        for bad, code in ((forged, "bad_signature"), (job_file, "unknown_site")):
            proc = subprocess.run([*RADFLOW, "hub", "release", "import", str(bad)], env=hub_env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 2 and code in proc.stderr, proc.stderr
        joined = hub_cli("hub", "release", "import", str(release_file))
        assert (joined["site"], joined["study"], joined["outcome"]) == (
            "delta", started["study"], "released")
        proc = subprocess.run([*RADFLOW, "hub", "release", "import", str(release_file)],
                              env=hub_env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 2 and "replayed" in proc.stderr, proc.stderr

        result_file = hub_home / "hub" / "studies" / started["study"] / "result.json"
        poll(result_file.exists, 180, "the study's result")
        result = json.loads(result_file.read_text())
        assert {s["site"]: s["status"] for s in result["sites"]} == dict.fromkeys(
            sites, "released")
        assert result["combined"]["matching"] == sum(m for _, m in local.values())  # pooled
        assert result["combined"]["series"] == sum(n for n, _ in local.values())
        hub_log = [json.loads(line) for line in (hub_home / "hub" / "audit.jsonl")
                   .read_text().splitlines()]
        actions = [e["action"] for e in hub_log]
        assert "job.exported" in actions and "release.imported" in actions
        assert sorted(e["detail"]["code"] for e in hub_log if e["action"] == "release.refused"
                      )[-3:] == ["bad_signature", "replayed", "unknown_site"]
    finally:
        manager.restart("delta", "agent")
