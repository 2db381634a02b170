"""Studies on the hub: queue one job per site, wait for the releases (until the deadline), and
combine them. A site that refuses is reported with its code only; a site whose release the hub
found malformed is reported as ``invalid_release`` (with the rule and schema field, never a
value); a site that does not answer by the deadline is reported as missing; the others' results
stand.

Results are hub artifacts under ``hub/studies/<id>/``: ``result.json``, the charts and a report
(``report.html``, with the charts inside) that says which sites took part, which refused and
why (the code only), and the policy each site applied.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from radflow.hub import registry, study_jobs
from radflow.hub.study_view import release_schema, study_view

ANSWERED = ("released", "refused", "invalid_release")  # a site's answer to a job
# runs one round's wait: (round number, the round's parameters, the wait) -> the sites' entries
EachRound = Callable[[int, dict[str, Any], Callable[[], list[dict[str, Any]]]],
                     list[dict[str, Any]]]


def run_study(engine: Engine, folder: Path, name: str, params: dict[str, Any],
              sites: list[str] | None = None, deadline_s: float = 600.0,
              poll: float = 0.5, study_id: str | None = None,
              on_site: Callable[[dict[str, Any]], None] | None = None,
              started_by: str | None = None,
              each_round: EachRound | None = None) -> dict[str, Any]:
    """Queue the study's jobs, round by round (:mod:`radflow.hub.coordinator`), each round
    waiting for its sites or ``deadline_s``; combine; write the artifacts. ``on_site`` is told
    of each site's release or refusal as it arrives; ``each_round(number, params, wait)`` runs
    each round's wait (the hub's flow makes it a Prefect task with the round's table).

    Run again with the id of a study that exists (its coordinator died with the hub:
    :mod:`radflow.hub.recovery`), it goes on from what the hub database holds: the rounds all of
    whose sites answered (or missed) are replayed through the coordinator, the round in flight
    is waited for (``deadline_s`` again from now: the hub's absence does not count against the
    sites), and a round is queued only when it has no jobs yet; a finished study's result is
    returned as it was written.

    Raises:
        StudyBusy: another live process coordinates this study.
    """
    from radflow.hub.coordinator import coordinator_for
    from radflow.hub.recovery import coordinating

    study_id = study_id or study_jobs.new_study_id()
    out = folder / "studies" / study_id
    with coordinating(folder, study_id):
        if (out / "result.json").exists():
            return json.loads((out / "result.json").read_text())
        study = study_jobs.study(engine, study_id)
        if study is None:
            study_jobs.check_study(engine, name, sites)
            version_hash = [v for v in registry.versions(engine) if v.name == name][-1].hash
        else:  # resumed: its own version and parameters
            version_hash, params = study.version_hash, json.loads(study.params)
        coordinator = coordinator_for(engine, folder, version_hash)
        first = coordinator.first_round(params) or {}
        if study is None:
            study, _ = study_jobs.start_study(engine, name, params, sites, deadline_s,
                                              study_id, started_by, round_params=first)
        rounds = _rounds(engine, study, coordinator, params, first, deadline_s, poll, on_site,
                         each_round)
        result = _result(study, params, rounds, coordinator.combine(params, rounds))
        out.mkdir(parents=True, exist_ok=True)
        if hasattr(coordinator, "charts"):
            pictures = [str(out / p) for p in coordinator.charts(result, rounds, out)]
        else:
            chart(result, out / "result.png")
            pictures = [str(out / "result.png")]
        result["artifacts"] = [str(out / "result.json"), str(out / "report.html"), *pictures]
        if (out / "model" / "radflow-model.json").exists():  # a trained model: signed and
            result["model"] = publish_study_model(folder, out / "model", study.id)  # offered
        write_report(result, out / "report.html", [Path(p) for p in pictures],
                     release_schema(engine, version_hash))
        written = out / "result.json.tmp"  # the result last, whole or not at all: it is what
        written.write_text(json.dumps(result, indent=2))  # says the study is finished
        written.replace(out / "result.json")
    return result


def publish_study_model(folder: Path, package: Path, study_id: str) -> dict[str, Any]:
    """Publish the model a study trained as a signed model version (its hash and name)."""
    from radflow.federation.model_versions import publish_model

    key = folder / "keys" / "hub.key"  # (HubHome.key; the API's test fixture keeps it in
    # the folder itself, where the API finds the models too)
    signed = publish_model(folder / "models", key if key.exists() else folder / "hub.key",
                           package, study=study_id)
    return {"hash": signed["hash"], "name": signed["manifest"]["name"],
            "version": signed["manifest"]["version"]}


def _rounds(engine: Engine, study: Any, coordinator: Any, params: dict[str, Any],
            first: dict[str, Any], deadline_s: float, poll: float,
            on_site: Callable[[dict[str, Any]], None] | None,
            each_round: EachRound | None) -> list[dict[str, Any]]:
    """Every round of the study, each waited for (at once when its sites answered already),
    the next one queued unless its jobs exist (queued before the hub restarted)."""
    rounds: list[dict[str, Any]] = []
    round_no, round_params = 0, first
    while True:
        began = time.monotonic()
        wait = functools.partial(_wait_round, engine, study.id, round_no, deadline_s, poll,
                                 on_site, round_params.get("round"))
        entries = each_round(round_no, round_params, wait) if each_round else wait()
        rounds.append({"round": round_params.get("round", "main"), "params": round_params,
                       "sites": entries, "seconds": time.monotonic() - began})
        released = [e["site"] for e in entries if e["status"] == "released"]
        following = coordinator.next_round(params, rounds) if released else None
        if following is None:
            return rounds
        round_no, round_params = round_no + 1, following
        if not study_jobs.study_jobs(engine, study.id, round_no):
            job_params = params | following
            if following.get("relay_site_keys"):  # (secure aggregation: the sites check each
                # other's round keys against the Ed25519 keys they enrolled with)
                job_params["site_keys"] = registry.public_keys(engine, released)
            study_jobs.queue_round(engine, study, round_no, released, job_params)


def _result(study: Any, params: dict[str, Any], rounds: list[dict[str, Any]],
            combined: dict[str, Any]) -> dict[str, Any]:
    per_site: dict[str, dict[str, Any]] = {}
    for done in rounds:  # a site's last release, or the refusal that ended its part
        for entry in done["sites"]:
            if per_site.get(entry["site"], {}).get("status", "released") == "released":
                per_site[entry["site"]] = entry
    return {"study": study.id, "flow": study.name, "version": study.version_hash,
            "params": params, "sites": [per_site[k] for k in sorted(per_site)],
            "rounds": [round_summary(r) for r in rounds] if len(rounds) > 1 else [],
            "combined": combined, "started_by": study.started_by,
            "finished": datetime.now(UTC).isoformat(timespec="seconds")}


def _wait_round(engine: Engine, study_id: str, round_no: int, deadline_s: float, poll: float,
                on_site: Callable[[dict[str, Any]], None] | None,
                label: str | None) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline_s
    told: set[str] = set()
    while True:
        rows = study_jobs.study_jobs(engine, study_id, round_no)
        for job in rows:
            if job.status in ANSWERED and job.site not in told:
                told.add(job.site)
                if on_site is not None:
                    on_site(_entry(job) | ({"round": label} if label else {}))
        settled = told | {job.site for job in rows if job.status == "missed"}  # (closed before)
        if len(settled) == len(rows) or time.monotonic() >= end:
            break
        time.sleep(poll)
    if len(settled) < len(rows):
        study_jobs.close_round(engine, study_id, round_no)
        rows = study_jobs.study_jobs(engine, study_id, round_no)
    return [_entry(job) for job in rows]


def round_summary(done: dict[str, Any]) -> dict[str, Any]:
    """A round as the report shows it: who answered how, and how many bytes each released
    (its seconds where ``done`` has them: a round still being waited for has none)."""
    label = (done.get("params") or {}).get("label")  # (the iteration a training round is of)
    seconds = {"seconds": round(done["seconds"], 3)} if "seconds" in done else {}
    return {"round": done["round"], **({"label": label} if label else {}), **seconds, "sites": {
        e["site"]: {"status": e["status"], **({"refusal": e["refusal"]} if "refusal" in e
                                                else {}),
                    "bytes": len(json.dumps(e["release"], sort_keys=True))
                    if "release" in e else 0} for e in done["sites"]}}


def _entry(job: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": job.site, "status": job.status
                             if job.status in ANSWERED else "missing"}
    if job.status in ("refused", "invalid_release"):
        entry["refusal"] = job.refusal or job.status
    if job.status == "invalid_release":
        entry["reason"] = job.reason or ""
    if job.status == "released":
        entry["release"] = json.loads(job.release)
    if job.policy:
        entry["policy"] = json.loads(job.policy)
    return entry


def combine(name: str, per_site: list[dict[str, Any]]) -> dict[str, Any]:
    """The cross-site answer. For a cohort count: the sum of the released counts; a count a site
    suppressed (under its min_cell) is shown as "<k" and makes the total a lower bound."""
    released = [s for s in per_site if s["status"] == "released"]
    if name != "federated-cohort-count":
        return {"sites_released": len(released)}
    known = [s["release"]["matching"] for s in released if s["release"]["matching"] is not None]
    suppressed = [s["site"] for s in released if s["release"]["matching"] is None]
    return {"matching": sum(known), "matching_is_lower_bound": bool(suppressed),
            "suppressed_at": suppressed, "series": sum(s["release"]["n"] for s in released),
            "sites_released": len(released),
            "sites_not_in": {s["site"]: s.get("refusal", "missing") for s in per_site
                             if s["status"] != "released"}}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def split_combined(combined: dict[str, Any]) -> tuple[list[tuple[str, list]], list[tuple]]:
    """A combined result as (title, rows) tables (its lists of rows) and (name, value) pairs."""
    tables = [(key.replace("_", " "), value) for key, value in combined.items()
              if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)]
    scalars = [(key.replace("_", " "), value) for key, value in combined.items()
               if not (isinstance(value, list) and value and isinstance(value[0], dict))]
    return tables, scalars


def write_report(result: dict[str, Any], path: Path, pictures: list[Path],
                 schema: Any = None) -> None:
    """The study report as one HTML file (charts inside): which sites took part, which refused
    and why (the code only), the policy each applied, the rounds, each site's release and the
    combined result as the same tables as the study page (:mod:`radflow.hub.study_view`)."""
    import base64

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    web = Path(__file__).parents[1] / "web"  # the apps' table CSS and icon
    env = Environment(loader=FileSystemLoader([Path(__file__).parent / "templates",
                                               web / "templates"]),
                      autoescape=select_autoescape(default=True))
    html = env.get_template("study_report.html").render(
        r={"state": "finished", **result}, view=study_view({"state": "finished", **result}, schema),
        favicon=base64.b64encode((web / "favicon.svg").read_bytes()).decode(),
        images=[(p.name, "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode())
                for p in pictures if p.exists()])
    path.write_text(html)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values, labels = [], [], []
    for s in result["sites"]:
        names.append(s["site"])
        value = (s.get("release") or {}).get("matching")
        values.append(value or 0)
        labels.append(str(value) if value is not None else
                      ("<k" if s["status"] == "released" else s.get("refusal", s["status"])))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    bars = ax.bar(names, values, color="#1f5fbf")
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{result['flow']} ({result['study']})")
    ax.set_ylabel("series selected")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def launch(home: Any, name: str, params: dict[str, Any], sites: list[str] | None,
           deadline_s: float, started_by: str, skip_unable: bool = False) -> dict[str, Any]:
    """Start a study as a run of ``federated-study/NAME`` on the hub's Prefect; returns its id,
    the run's id and its page (and ``left_out``: the sites that cannot run it, with why, when
    ``skip_unable``). Bad requests (no such flow, unknown sites, sites whose reported radflow or
    plugin versions are below what the version needs) fail here, before any run exists.

    Raises:
        ConfigurationError: the flow is not published, a site is unknown, or a chosen site
            cannot run it (unless ``skip_unable`` and another can).
    """
    from radflow.errors import ConfigurationError
    from radflow.hub.fleet import readiness

    engine = home.engine()
    chosen = study_jobs.check_study(engine, name, sites)
    study_jobs.check_params(engine, name, params)
    ready = readiness(engine, name, chosen, params=params)
    unable = [row for row in ready["sites"] if row["can_run"] is False]
    if unable and (not skip_unable or len(unable) == len(chosen)):
        why = "; ".join(f"{row['site']} {', '.join(b['text'] for b in row['blocking'])}"
                        for row in unable)
        fixes = sorted({b["fix"] for row in unable for b in row["blocking"]})
        if len(unable) == len(chosen):
            raise ConfigurationError(f"no chosen site can run {name} {ready['version'][:19]}: "
                                     f"{why}", fix="; ".join(fixes))
        raise ConfigurationError(
            f"{len(unable)} of the {len(chosen)} chosen sites cannot run {name} "
            f"{ready['version'][:19]}: {why}",
            fix=f"{'; '.join(fixes)}; or start it without them (--skip-unable, or --sites)")
    if unable:
        sites = [row["site"] for row in ready["sites"] if row["can_run"] is not False]
    study_id = study_jobs.new_study_id()
    queued = study_jobs.queue_single_round(engine, name, params, sites, deadline_s, study_id,
                                           started_by)
    api = home.prefect()
    try:
        run = api.create_flow_run(f"federated-study/{name}", {
            "name": name, "params": params, "sites": sites or None, "deadline_s": deadline_s,
            "study_id": study_id, "started_by": started_by}, tags=(f"study:{study_id}",))
    except BaseException:
        if queued:  # no coordinator will follow its jobs: the study never started (an agent
            study_jobs.forget_study(engine, study_id)  # that took one is told "unknown job")
        raise
    return {"study": study_id, "flow_run": run.id, "url": api.flow_run_ui(run.id),
            "left_out": [{"site": row["site"], "blocking": row["blocking"]} for row in unable]}


def study_state(home: Any, study_id: str) -> dict[str, Any] | None:
    """A finished study's result; a running one's jobs so far; None for an unknown id."""
    out = home.root / "studies" / study_id / "result.json"
    if study_id.isalnum() and out.exists():
        return {"state": "finished", **json.loads(out.read_text())}
    row = study_jobs.study(home.engine(), study_id)
    if row is None:
        return _before_start(home, study_id)
    return {"state": "running", "study": row.id, "flow": row.name, "version": row.version_hash,
            "started_by": row.started_by, "params": json.loads(row.params),
            "sites": [_running(job) for job in study_jobs.study_jobs(home.engine(), row.id)]}


def _running(job: Any) -> dict[str, Any]:
    """A job of a running study: its answer, or where it is (queued, taken), and its round."""
    entry = _entry(job)
    if job.status in ("queued", "taken"):
        entry["status"] = job.status
    params = json.loads(job.params or "{}")
    if "round" in params:
        entry["round"] = params["round"]
    return entry


def _before_start(home: Any, study_id: str) -> dict[str, Any] | None:
    """A study whose coordinator run exists but has not queued its jobs yet (``starting``),
    or ended before it could (``failed``, with Prefect's message); None for no such run."""
    from radflow.errors import RadflowError

    if not study_id.isalnum():
        return None
    try:
        runs = home.prefect(timeout=5).flow_runs_tagged(f"study:{study_id}", limit=1)
    except (RadflowError, OSError):
        return None
    if not runs:
        return None
    run = runs[0]
    state = "failed" if run.is_final and not run.ok else "starting"
    chosen = run.parameters.get("sites") or [
        s.name for s in registry.sites(home.engine()) if s.status == "enrolled"]
    return {"state": state, "study": study_id, "flow": run.parameters.get("name", ""),
            "version": "", "params": run.parameters.get("params") or {},
            "sites": [{"site": name, "status": "waiting" if state == "starting" else "not_queued"}
                      for name in sorted(chosen)],
            **({"message": run.message or run.state} if state == "failed" else {})}


def study_rows(home: Any) -> list[dict[str, Any]]:
    """Every study, newest first: id, flow, who started it, finished or running."""
    rows = []
    for row in study_jobs.studies(home.engine()):
        done = (home.root / "studies" / row.id / "result.json").exists()
        rows.append({"study": row.id, "flow": row.name, "version": row.version_hash,
                     "started_by": row.started_by, "created_at": row.created_at.isoformat(),
                     "state": "finished" if done else "running"})
    return rows


def flow_rows(engine: Engine) -> list[dict[str, Any]]:
    """The newest version of each published flow: name, hash, publisher, parameter schema."""
    newest: dict[str, Any] = {}
    for version in registry.versions(engine):
        newest[version.name] = version
    return [{"name": v.name, "label": v.label, "hash": v.hash, "publisher": v.publisher,
             "published_at": v.published_at.isoformat(),
             "parameter_schema": json.loads(v.signed)["manifest"].get("parameter_schema", {}),
             "rounds": sorted(json.loads(v.signed)["manifest"]["release_schema"].get("rounds")
                              or [])}
            for v in sorted(newest.values(), key=lambda v: v.name)]
