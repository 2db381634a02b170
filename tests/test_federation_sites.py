"""A hub and three sites, every part real: the hub (`radflow hub up`: its Prefect server, its
worker and the federation API, behind a recording reverse proxy), and the sites alpha (the
session's), delta and epsilon, each with its own Orthanc, Prefect server, worker, agent, catalog
and synthetic patients (different seeds: different vendor mixes), plus one patient per site with
names, IDs, UIDs and descriptions found nowhere else.

Studies run as `radflow study run` (a flow run on the hub's Prefect). Checked: an unapproved
version is refused with not_approved and the site's audit log says so; the federated count
equals the pooled count computed here from the three catalogs; a site taken down while its job
is in flight is reported missing and the others' results stand; a revoked site's token is
refused at once; and none of the distinctive strings, nor any UID of any site, is anywhere under
the hub's folder (its database, its Prefect database, its logs, the study artifacts) or in any
request body the hub received."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import federation_fixture
import psutil
import pytest
from conftest import (
    RADFLOW,
    Webhook,
    catalog_secrets,
    send,
    wait_settled,
)
from discovery_checks import discovery_and_access
from federation_checks import (
    audit_actions,
    dump_site_parts,
    hub_jobs,
    hub_processes,
    needy_package,
    newest_study,
    poll,
    pooled,
    pooled_table,
    quantify,
    site_logs,
)
from hub_pages import (
    FEATURES,
    SEGMENTS,
    coordinator_page,
    hub_web_by_browser,
    schedules_by_browser,
    training_page,
)
from offline_checks import never_online
from sqlmodel import create_engine, select

from radflow.catalog.db import session_scope
from radflow.cohorts.definition import parse_short
from radflow.federation.client import HubClient
from radflow.federation.policy import SitePolicy, save_policy
from radflow.hub.home import HubHome
from radflow.prefect_api import PrefectApi
from radflow.synth import synthesize

pytestmark = [pytest.mark.services, pytest.mark.slow]
federation = federation_fixture.federation  # the hub and three sites (a module fixture)
PACKAGE = "federation/flows/federated-cohort-count"


ANALYTICS = ("federated-feature-statistics", "federated-harmonization-check",
             "federated-logistic-regression")


def test_federated_statistics_regression_and_harmonization(federation, tmp_path) -> None:
    """Three studies over the three sites, each checked against the pooled computation done
    here on the same data: moments (1e-9 relative), quantiles (inside their stated bounds),
    Levene's test (scipy), logistic regression (statsmodels, 1e-6); a site under its minimum
    cohort refuses and the study says so; a site whose n is too small for the model refuses."""
    import numpy as np
    import statsmodels.api as sm
    from scipy import stats as scipy_stats

    hub_cli, sites = federation["hub_cli"], federation["sites"]
    with ThreadPoolExecutor(len(sites)) as pool:  # each site on its own worker, at once
        list(pool.map(lambda item: quantify(item[1], federation["sent"][item[0]]),
                      sites.items()))
    cohort = parse_short(["modality=CT"])
    cohort_file = tmp_path / "cohort.json"
    cohort_file.write_text(cohort.canonical_json())
    versions = {flow: hub_cli("publish", f"federation/flows/{flow}")["hash"]
                for flow in ANALYTICS}
    approved = list(versions.values())

    def policy(name: str, **values) -> None:
        save_policy(sites[name].paths.root, SitePolicy(approved=approved, job_mode="auto",
                                                       **({"min_cohort": 2, "min_cell": 2}
                                                          | values)))

    def study(flow: str, *params: str) -> dict:
        return hub_cli("study", "run", flow, "--cohort", str(cohort_file), "--deadline", "240",
                       *[x for p in params for x in ("--param", p)])

    # 1. feature statistics; epsilon's minimum cohort is above its n: it refuses
    policy("alpha")
    policy("delta")
    policy("epsilon", min_cohort=500)
    released_before = {n: audit_actions(c).count("federation.released")
                       for n, c in sites.items()}
    stats = study("federated-feature-statistics", f"features={','.join(FEATURES)}",
                  f"segments={','.join(SEGMENTS)}", "bins=48")
    combined = stats["combined"]
    assert combined["sites_not_in"] == {"epsilon": "policy_violation:min_cohort"}
    assert {s["site"]: s["status"] for s in stats["sites"]} == {
        "alpha": "released", "delta": "released", "epsilon": "refused"}
    assert [r["round"] for r in stats["rounds"]] == ["span", "histogram"]
    assert audit_actions(sites["epsilon"])[-1] == "federation.refused"
    for name in ("alpha", "delta"):  # the gate recorded every release of every round
        assert audit_actions(sites[name]).count("federation.released") == \
            released_before[name] + 2
    report = (federation["hub_home"] / "hub" / "studies" / stats["study"] / "report.html")
    assert "policy_violation:min_cohort" in report.read_text()
    checked = 0
    for row in combined["features"]:
        values = np.concatenate([
            np.array([v for v, _ in pooled_table(sites[n], cohort, row["feature"],
                                                 row["segment"])]) for n in ("alpha", "delta")])
        assert row["n"] == values.size >= 6
        for key, want in (("mean", values.mean()), ("variance", values.var(ddof=1)),
                          ("sd", values.std(ddof=1))):
            assert abs(row[key] - want) <= 1e-9 * abs(want), (row["feature"], key)
        for interval in (i for i in combined["quantile_intervals"]
                         if (i["feature"], i["segment"]) == (row["feature"], row["segment"])):
            pooled_q = float(np.quantile(values, interval["quantile"]))
            assert interval["low"] <= pooled_q <= interval["high"], interval
            assert interval["error_bound"] == (interval["high"] - interval["low"]) / 2
            checked += 1
    assert checked == 5 * len(FEATURES) * len(SEGMENTS)

    # 2. the harmonization check across the three sites and the vendors
    for name in sites:
        policy(name, min_cell=1)
    by_site = {n: pooled_table(c, cohort, FEATURES[0], "liver") for n, c in sites.items()}
    vendors = sorted({series.manufacturer for rows in by_site.values() for _, series in rows})
    assert len(vendors) >= 2
    harmony = study("federated-harmonization-check", f"features={FEATURES[0]}",
                    "segments=liver", f"vendors={json.dumps(vendors)}")
    rows = {r["across"]: r for r in harmony["combined"]["levene"]}
    want = scipy_stats.levene(*[np.array([v for v, _ in by_site[n]]) for n in sorted(sites)],
                              center="mean")
    assert abs(rows["site"]["levene_w"] - want.statistic) <= 1e-9 * want.statistic
    assert abs(rows["site"]["p_value"] - want.pvalue) <= 1e-9 * want.pvalue
    groups = [np.array([v for rows_ in by_site.values() for v, s in rows_
                        if s.manufacturer == vendor]) for vendor in vendors]
    want = scipy_stats.levene(*[g for g in groups if g.size], center="mean")
    assert abs(rows["vendor"]["levene_w"] - want.statistic) <= 1e-9 * want.statistic
    assert abs(rows["vendor"]["p_value"] - want.pvalue) <= 1e-9 * want.pvalue
    assert {"harmonization.png", "site-distributions.png"} <= {
        a.rsplit("/", 1)[-1] for a in harmony["artifacts"]}

    # 3. logistic regression; delta keeps DataSHIELD's ratio (0.33 n): 2 parameters are too
    #    many for its n, and it refuses
    policy("delta", min_cell=1, max_parameters_ratio=0.33)
    for name in ("alpha", "epsilon"):
        policy(name, min_cell=1, max_parameters_ratio=1.0)
    terms = [f"feature:{FEATURES[1]}@liver"]  # liver volume: independent of sex here
    fit = study("federated-logistic-regression", "outcome=sex_female",
                f"terms={json.dumps(terms)}")
    combined = fit["combined"]
    assert combined["sites_not_in"] == {"delta": "policy_violation:parameters"}
    assert combined["converged"] and combined["sites_in_fit"] == ["alpha", "epsilon"]
    x, y = [], []
    for name in ("alpha", "epsilon"):
        for value, series in pooled_table(sites[name], cohort, FEATURES[1], "liver"):
            if series.patient_sex is not None:
                x.append([1.0, value])
                y.append(float(series.patient_sex == "F"))
    pooled_fit = sm.Logit(np.array(y), np.array(x)).fit(disp=0, tol=1e-12, maxiter=100)
    assert combined["n"] == len(y)
    got = combined["coefficients"]
    for key, want in (("estimate", pooled_fit.params), ("std_error", pooled_fit.bse),
                      ("p_value", pooled_fit.pvalues)):  # 1e-6, relative (a slope per mm3 is
        np.testing.assert_allclose([c[key] for c in got], want, rtol=1e-6, atol=1e-12)  # tiny)
    steps = [c["max_step"] for c in combined["convergence"][1:]]
    assert steps[-1] < 1e-10 and len(steps) >= 3  # convergence, reported per round


def test_federated_nnunet_training(federation, cli, tmp_path, browser, shots) -> None:
    """Federated nnU-Net over the three sites from their reviewed labels (imported ground
    truth, recorded accepted), with secure aggregation: the fingerprint, the round keys, two
    FedAvg rounds of masked updates through the gates (epsilon's policy does not allow weights:
    its agent refuses the first masked round, which runs again without it, the quorum of two
    goes on), the validation. The hub is killed while the sites train the first round and goes
    on when it is back; the coordinator reads the study on its page, each round is a task with
    its table in the hub's Prefect. Then the model, signed by the hub, approved and installed
    at alpha, segments a series there."""
    from radflow.catalog.models import DerivedResult
    from radflow.federation.weights import checkpoint_bytes

    hub_cli, sites = federation["hub_cli"], federation["sites"]

    def labelled(item) -> None:  # 3 cases a site of 40x40: 2 train, 1 held out (seed 5)
        name, ctx = item
        data = tmp_path / f"labels-{name}"
        synthesize(data, 3, seed=100 + sorted(sites).index(name), matrix=40, seg=True)
        send(ctx, *[case / "dicom" for case in sorted(data.glob("case_*"))])
        cli("data", "import-labels", str(data), "--site", name, check=True)
        wait_settled(ctx)

    with ThreadPoolExecutor(len(sites)) as pool:
        list(pool.map(labelled, sites.items()))
    version = hub_cli("publish", "federation/flows/federated-nnunet-training")["hash"]
    for name, ctx in sites.items():
        save_policy(ctx.paths.root, SitePolicy(approved=[version], job_mode="auto",
                                               min_cohort=1, min_cell=1,
                                               allow_weights=name != "epsilon"))
    cohort_file = tmp_path / "cohort.json"
    cohort_file.write_text(parse_short(["modality=CT", "rows=40"]).canonical_json())
    import threading

    hub_home = federation["hub_home"]
    engine = create_engine(f"sqlite:///{hub_home / 'hub' / 'hub.db'}")
    began = datetime.now(UTC) - timedelta(seconds=1)
    runner = subprocess.Popen([*RADFLOW, "study", "run", "federated-nnunet-training", "--cohort",
                               str(cohort_file), "--deadline", "300", "--json", *[x for p in (
                                   "rounds=2", "epochs=1", "iterations=2", "patch=[16,32,32]",
                                   "held_out=0.34", "seed=5", "samples_per_case=2000",
                                   "secure_aggregation=true", "model_name=fed-e2e")
                                   for x in ("--param", p)]],
                              env={**os.environ, "RADFLOW_HOME": str(hub_home)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, dump_site_parts, [sites])  # (a hang seen twice: where is it?)
    watchdog.start()
    try:
        study = poll(lambda: newest_study(engine, "federated-nnunet-training", began), 120,
                     "the study")
        poll(lambda: any(j.round == 2 for j in hub_jobs(engine, study)), 240,
             "the first training round")  # (0 the fingerprint, 1 the keys)
        # the hub dies while the sites train: every process of it, the coordinator included;
        # back, it goes on from the rounds its database holds
        doomed = [proc for group in hub_processes(hub_home).values() for proc in group]
        for proc in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(doomed, timeout=30)
        hub_cli("hub", "up")
        out, err = runner.communicate(timeout=600)
    except subprocess.TimeoutExpired:  # the sites' logs, with the stacks the watchdog asked
        raise AssertionError(site_logs(sites, {"timeout": "the study did not end"})) from None
    finally:
        watchdog.cancel()
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, f"{out}\n{err}"
    result = json.loads(out)
    assert result["study"] == study
    coordinators = HubHome.of(hub_home).prefect().flow_runs_tagged(f"study:{study}")
    assert [r.state for r in coordinators] == ["COMPLETED", "CRASHED"]  # newest first
    combined = result["combined"]
    assert [(r["round"], r.get("label")) for r in result["rounds"]] == [
        ("fingerprint", None), ("keys", "train-1-a1"), ("train_secure", "train-1-a1"),
        ("keys", "train-1-a2"), ("train_secure", "train-1-a2"),
        ("train_secure", "train-2-a1"), ("validate", None)], site_logs(sites, combined)
    assert combined["finished"] and combined["rounds_trained"] == 2, combined
    assert combined["sites_not_in"] == {"epsilon": "policy_violation:weights"}
    assert sorted(combined["cases_per_site"]) == ["alpha", "delta"]
    assert sorted(combined["validation"]) == ["alpha", "delta"]
    for entry in combined["training"]:
        assert entry["secure"] and entry["sites"] == 2 and entry["loss"] is not None
        for size in entry["bytes"].values():  # uint32 in base64, against an fp32 checkpoint
            assert size < checkpoint_bytes(combined["parameters"]) / 2
    for site_values in combined["validation"].values():
        for organ, values in site_values.items():
            assert 0.0 <= values["mean"] <= 1.0 and values["n"] >= 1, (organ, values)
    kept = {name: sites[name].paths.root / "studies" / result["study"] / "nnunet"
            for name in sites}
    for name in ("alpha", "delta"):  # each site's split and preprocessed cases stay there
        assert (kept[name] / "state.json").exists()
        assert (kept[name] / "preprocessed.json").exists()
    # epsilon's agent refused the masked round before its worker did any work
    assert (kept["epsilon"] / "state.json").exists()
    assert not (kept["epsilon"] / "preprocessed.json").exists()

    page, web = coordinator_page(browser, hub_cli, "coordinator")  # as the coordinator reads it
    training_page(page, web, result, shots)
    page.context.close()
    prefect = hub_cli("hub", "credentials")["prefect"]  # each round a task in the hub's Prefect
    hub_api = PrefectApi(prefect["url"] + "/api", (prefect["username"], prefect["password"]))
    keys = [f"study-{result['study']}-round-{n}" for n in range(1, len(result["rounds"]) + 1)]
    tables = hub_api._request("POST", "artifacts/filter", "the rounds' artifacts", json={
        "artifacts": {"key": {"any_": keys}}}).json()
    assert {a["key"] for a in tables} == set(keys)  # (the rounds before the restart: twice)
    tasks = hub_api._request("POST", "task_runs/filter", "the rounds' tasks", json={
        "task_runs": {"name": {"like_": "round "}}}).json()
    assert {"round 3: train_secure train-1-a1", "round 7: validate"} <= {t["name"] for t in tasks}

    # the model: offered signed, approved and installed at alpha, and used there
    model = result["model"]
    assert model["name"] == "fed-e2e" and model["version"] == result["study"]
    from radflow_nnunet.models import models_home

    cli("model", "approve", model["hash"], "--site", "alpha", check=True)
    try:
        cli("model", "install-version", model["hash"], "--site", "alpha", check=True)
        series = next(iter(federation["sent"]["alpha"]))
        cli("pipeline", "run", "--site", "alpha", "--series", series, "--model", "fed-e2e",
            check=True, timeout=600)
    finally:  # (other tests list the installed models)
        shutil.rmtree(models_home() / "fed-e2e", ignore_errors=True)
    with session_scope(sites["alpha"].catalog_url) as session:
        made = {(r.algorithm, r.version) for r in session.exec(
            select(DerivedResult).where(DerivedResult.source_series_uid == series))}
    assert ("fed-e2e", result["study"]) in made, made


def test_discovery_and_access_requests(federation, cli, tmp_path, browser, shots) -> None:
    """Collection summaries against the catalogs, rounded as each policy states; the Discover
    page; an access request filed, decided at two sites and gating a study (discovery_checks)."""
    discovery_and_access(federation, cli, tmp_path, browser, shots)


def test_a_site_that_is_never_online(federation, cli, manager, tmp_path) -> None:
    """delta's job as a signed file and its release back as one: the same result as online;
    tampered and replayed files refused at both ends (offline_checks)."""
    never_online(federation, cli, manager, tmp_path)


def test_a_hub_and_three_sites(federation, cli, tmp_path, browser, shots) -> None:
    hub_cli, sites = federation["hub_cli"], federation["sites"]
    version = hub_cli("publish", PACKAGE)["hash"]
    cohort = parse_short(["modality=CT"])
    cohort_file = tmp_path / "cohort.json"
    cohort_file.write_text(cohort.canonical_json())
    for name in ("delta", "epsilon"):  # alpha has not approved the version
        save_policy(sites[name].paths.root, SitePolicy(approved=[version], job_mode="auto",
                                                       min_cohort=2, min_cell=2))
    save_policy(sites["alpha"].paths.root, SitePolicy(job_mode="auto", min_cohort=2,
                                                      min_cell=2))
    refused_before = audit_actions(sites["alpha"]).count("federation.refused")
    first = hub_cli("study", "run", "federated-cohort-count", "--cohort", str(cohort_file),
                    "--deadline", "120")
    status = {s["site"]: s for s in first["sites"]}
    assert status["alpha"] | {"policy": None} == {"site": "alpha", "status": "refused",
                                                  "refusal": "not_approved", "policy": None}
    assert status["alpha"]["policy"]["min_cohort"] == 2  # what its gate applied, in the result
    assert audit_actions(sites["alpha"]).count("federation.refused") == refused_before + 1
    assert status["delta"]["status"] == status["epsilon"]["status"] == "released"
    assert first["flow_run"].startswith("http://127.0.0.1:")  # watched on the hub's Prefect

    cli("site", "approve", version, "--site", "alpha", check=True)  # audited approval
    assert "version.approved" in audit_actions(sites["alpha"])
    # a study on a schedule (every minute here): its runs are ordinary studies
    scheduled = hub_cli("study", "schedule", "federated-cohort-count", "--cron", "* * * * *",
                        "--cohort", str(cohort_file), "--deadline", "120")
    assert scheduled["active"] and scheduled["created_by"].startswith("cli:")
    assert scheduled["params"]["cohort"] == json.loads(cohort.canonical_json())
    # a coordinator away from the hub: through the API, with a personal token
    token = hub_cli("hub", "token", "create", "c.oordinator")["token"]
    remote = subprocess.run([*RADFLOW, "study", "run", "federated-cohort-count", "--cohort",
                             str(cohort_file), "--deadline", "120", "--json"],
                            env={**os.environ, "RADFLOW_HUB_URL": federation["proxy"].url,
                                 "RADFLOW_HUB_TOKEN": token}, capture_output=True, text=True,
                            timeout=300, check=False)
    assert remote.returncode == 0, remote.stderr
    second = json.loads(remote.stdout)
    assert second["started_by"] == "token:c.oordinator" and first["started_by"].startswith("cli:")
    local = {name: pooled(ctx, cohort) for name, ctx in sites.items()}
    assert all(matching >= 2 for _, matching in local.values())
    for s in second["sites"]:
        assert s["status"] == "released"
        assert s["release"] == {"n": local[s["site"]][0], "matching": local[s["site"]][1]}
    assert second["combined"]["matching"] == sum(m for _, m in local.values())  # = pooled
    assert second["combined"]["series"] == sum(n for n, _ in local.values())
    listed = hub_cli("study", "list")
    assert {first["study"], second["study"]} <= {r["study"] for r in listed}
    # the fleet: each site's agent reported it; the table says what each site's status says
    from radflow import __version__
    from radflow.site import SiteManager

    deadline = time.monotonic() + 90
    while True:
        fleet = {r["site"]: r for r in hub_cli("hub", "fleet")}
        if all((fleet[n]["health"] or {}).get("state") == "running" and fleet[n]["queue"] == 0
               for n in sites):  # (an agent reports again when a job of its ends)
            break
        assert time.monotonic() < deadline, fleet
        time.sleep(2)
    for name, ctx in sites.items():
        own = SiteManager(ctx.settings).status(name)
        assert {c["name"]: c["state"] for c in fleet[name]["health"]["components"]} == {
            c.name: c.state for c in own.components}, name
        assert fleet[name]["radflow"] == __version__ and fleet[name]["drift"] == []
        assert not fleet[name]["silent"] and fleet[name]["last_study"]["flow"] == \
            "federated-cohort-count"
    # a version that needs a newer radflow than every site reports: refused before it starts
    hub_cli("publish", str(needy_package(tmp_path, "federated-count-next",
                                         '{radflow: ">=99"}')))
    env = {**os.environ, "RADFLOW_HOME": str(federation["hub_home"])}
    checked = subprocess.run([*RADFLOW, "study", "check", "federated-count-next", "--json"],
                             env=env, capture_output=True, text=True, timeout=120, check=False)
    assert checked.returncode == 1, checked.stderr
    ready = json.loads(checked.stdout)
    assert ready["requires"] == {"radflow": ">=99"}
    assert {r["site"]: (r["can_run"], [b["text"] for b in r["blocking"]])
            for r in ready["sites"]} == {
        name: (False, [f"needs radflow>=99 (has {__version__})"]) for name in sites}
    refused = subprocess.run([*RADFLOW, "study", "run", "federated-count-next", "--cohort",
                              str(cohort_file)], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode != 0
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "no chosen site can run federated-count-next" in said, said
    assert "pip install 'radflow>=99'" in said, said
    assert not [r for r in hub_cli("study", "list")  # nothing was started
                if r["flow"] == "federated-count-next"]
    hub_web_by_browser(browser, shots, hub_cli, federation["hub_home"], local)

    # the schedule's first study has started (Prefect's scheduler, at a minute's turn)
    slug = scheduled["slug"]
    deadline = time.monotonic() + 150
    while not [r for r in hub_cli("study", "schedule", "list")
               if r["slug"] == slug and r["last_studies"]]:
        assert time.monotonic() < deadline, hub_cli("study", "schedule", "list")
        time.sleep(2)
    schedules_by_browser(browser, shots, hub_cli, slug)  # paused there
    (row,) = [r for r in hub_cli("study", "schedule", "list") if r["slug"] == slug]
    assert not row["active"] and row["next_run"] is None
    ran = row["last_studies"][-1]["study"]  # (the first; a second may have started meanwhile)
    done = federation["hub_home"] / "hub" / "studies" / ran / "result.json"
    deadline = time.monotonic() + 150
    while not done.exists():
        assert time.monotonic() < deadline, hub_cli("study", "show", ran)
        time.sleep(1)
    shown = hub_cli("study", "show", ran)
    assert shown["started_by"] == f"schedule:{slug} ({scheduled['created_by']})"
    assert {s["site"]: s["status"] for s in shown["sites"]} == dict.fromkeys(sites, "released")
    assert shown["combined"]["matching"] == sum(m for _, m in local.values())  # = pooled
    for other in row["last_studies"][:-1]:  # any later one ends before delta's part below
        poll(lambda study=other["study"]: (federation["hub_home"] / "hub" / "studies" / study
                                           / "result.json").exists(), 150,
             f"the scheduled study {other['study']}")
    assert hub_cli("study", "schedule", "delete", slug)["slug"] == slug
    assert slug not in [r["slug"] for r in hub_cli("study", "schedule", "list")]

    # the operator's silence alert: a Prefect automation that notifies a webhook
    webhook = Webhook()
    hub_cli("hub", "alerts", "set", "--webhook", webhook.url, "--silent-after", "45s")
    assert hub_cli("hub", "alerts", "--test")["enabled"]
    assert webhook.wait_for(lambda b: b["subject"] == "radflow hub: a test alert", 30)

    # delta takes its jobs by hand; its job reaches it, and then the whole site goes down
    save_policy(sites["delta"].paths.root, SitePolicy(approved=[version], min_cohort=2,
                                                     min_cell=2))
    started = hub_cli("study", "run", "federated-cohort-count", "--cohort", str(cohort_file),
                      "--deadline", "40", "--no-wait")
    deadline = time.monotonic() + 60
    waiting: list = []
    while time.monotonic() < deadline and not waiting:
        waiting = json.loads(cli("site", "jobs", "list", "--site", "delta", "--json",
                                 check=True).stdout)
    assert waiting and waiting[0]["study"] == started["study"]
    from radflow.site import SiteManager

    SiteManager(sites["delta"].settings).down("delta")
    result_file = federation["hub_home"] / "hub" / "studies" / started["study"] / "result.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not result_file.exists():
        time.sleep(0.5)
    third = json.loads(result_file.read_text())
    status = {s["site"]: s["status"] for s in third["sites"]}
    assert status == {"alpha": "released", "delta": "missing", "epsilon": "released"}
    assert third["combined"]["sites_not_in"] == {"delta": "missing"}
    assert third["combined"]["matching"] == local["alpha"][1] + local["epsilon"][1]
    shown = hub_cli("study", "show", started["study"])
    assert shown["sites"] == third["sites"]
    # delta's agent stopped with it: 45 s after it was last heard, the operator is told
    alert = webhook.wait_for(lambda b: "delta" in b["subject"], 120)
    assert alert and alert["subject"] == "radflow hub: site delta is silent", webhook.received
    assert "has not been heard for 45 s" in alert["text"]
    assert not [b for b in webhook.received if "alpha" in b["subject"]]  # it polls: heard
    assert hub_cli("hub", "alerts", "off")["removed"] == 1
    webhook.close()

    # a revoked site is cut off at once: the token it holds stops working
    epsilon = HubClient(sites["epsilon"].paths.root)
    assert epsilon.get("").status_code == 200
    hub_cli("hub", "site", "revoke", "epsilon")
    assert epsilon.get("").status_code == 401

    # the leak test, over everything the hub keeps and everything it was sent
    secrets = set(federation["distinctive"])
    for ctx in sites.values():
        secrets |= catalog_secrets(ctx)
    secrets = {s for s in secrets if len(s) >= 6}
    assert len(secrets) >= 20
    hub_folder = federation["hub_home"] / "hub"
    files = [p for p in hub_folder.rglob("*") if p.is_file()]
    assert any(p.name == "prefect.db" for p in files) and any(p.suffix == ".log" for p in files)
    stored = b"".join(p.read_bytes() for p in files)
    received = b"\n".join(federation["proxy"].bodies)
    assert b"client_assertion" in received and b"matching" in received
    for secret in secrets:
        assert secret.encode() not in stored, secret
        assert secret.encode() not in received, secret
