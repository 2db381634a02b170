"""The hub and three sites of tests/test_federation_sites.py (a module fixture, imported there):
the hub (`radflow hub up`, behind a recording reverse proxy) and the sites alpha (the session's),
delta and epsilon, each enrolled, started with its agent and filled with its own synthetic
patients plus one distinctive patient found nowhere else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import (
    RADFLOW,
    RecordingProxy,
    distinctive_patient,
    free_port,
    reported,
    send,
    wait_settled,
)

from radflow.federation.client import join
from radflow.federation.policy import policy_path
from radflow.synth import synthesize

SITES = ("alpha", "delta", "epsilon")


@pytest.fixture(scope="module")
def federation(site, manager, synth_dir, tmp_path_factory, request):
    hub_home = tmp_path_factory.mktemp("hub-home")
    env = {**os.environ, "RADFLOW_HOME": str(hub_home)}

    def hub_cli(*args: str) -> dict:
        proc = subprocess.run([*RADFLOW, *args, "--json"], env=env, capture_output=True,
                              text=True, timeout=400, check=False)
        assert proc.returncode == 0, f"radflow {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    api_port = free_port()
    proxy = RecordingProxy(f"http://127.0.0.1:{api_port}")
    hub_cli("hub", "up", "--port", str(api_port), "--prefect-port", str(free_port()),
            "--web-port", str(free_port()), "--idp-port", str(free_port()),
            "--public-url", proxy.url)
    distinctive: set[str] = set()
    contexts = {}
    sent: dict[str, list[str]] = {}

    def bring(name: str) -> None:
        """Enrol, start, fill: alpha (the session's site) first, delta and epsilon side by
        side (a new site's ports are chosen under the home's lock)."""
        code = hub_cli("hub", "site", "add", name)["code"]
        root = manager.settings.home / "sites" / name
        join(proxy.url, name, code, root)
        manager.up(name, stable_age=2)  # alpha: starts its agent, now enabled
        ctx = manager.context(name)
        assert manager.status(name).component("agent").state == "running"
        data = synth_dir if name == "alpha" else tmp_path_factory.mktemp(f"synth-{name}")
        if name != "alpha":  # other seeds: other vendor mixes, organs and demographics
            synthesize(data, 4, seed=len(name) * 7 + ord(name[0]), matrix=64)
        leak = tmp_path_factory.mktemp(f"leak-{name}")
        made = distinctive_patient(data / "case_000" / "dicom", leak, name.title())
        distinctive.update(made.values())
        send(ctx, data, leak)
        contexts[name] = ctx
        sent[name] = [c["series_uid"] for c in json.loads(
            (data / "manifest.json").read_text())["cases"]] + [made["SeriesInstanceUID"]]

    try:
        bring(SITES[0])
        with ThreadPoolExecutor(len(SITES) - 1) as pool:
            list(pool.map(bring, SITES[1:]))  # list(): a failure in either is raised here
        contexts = {name: contexts[name] for name in SITES}
        for ctx in contexts.values():
            wait_settled(ctx)
        yield {"hub_cli": hub_cli, "hub_home": hub_home, "proxy": proxy, "sites": contexts,
               "distinctive": distinctive, "sent": sent}
    finally:
        from radflow.site.components import component

        def gone(name: str) -> None:  # gone again: other tests count the sites
            if name in manager.sites():
                with reported(request, f"site {name} down"):
                    manager.down(name)
                shutil.rmtree(manager.settings.home / "sites" / name, ignore_errors=True)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(gone, ("delta", "epsilon")))
        with reported(request, "alpha's agent stopped"):
            component("agent").process(site).stop()
        with reported(request, "hub down"):
            hub_cli("hub", "down")
        proxy.close()
        shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
        policy_path(site.paths.root).unlink(missing_ok=True)
