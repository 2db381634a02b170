"""``radflow study``: run cross-site studies and look at their results.

On the hub machine it works on the hub's folder directly (as `radflow hub` does). Anywhere else
it calls the hub's API: ``--hub URL`` (or ``RADFLOW_HUB_URL``) with a personal API token in
``RADFLOW_HUB_TOKEN`` (from `radflow hub token create`; never on the command line). Either way a
study is a run of ``federated-study/NAME`` on the hub's Prefect, and records who started it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from radflow.cli.common import JSON, console, print_json, report
from radflow.errors import (
    ConfigurationError,
    RadflowError,
    SiteError,
    TransientError,
    is_transient,
)

app = typer.Typer(help="Cross-site studies: run one, list them, show one.", no_args_is_help=True)
HUB = typer.Option(None, "--hub", envvar="RADFLOW_HUB_URL", help="The hub's URL, to work "
                   "through its API (token in RADFLOW_HUB_TOKEN); default: this machine's hub.")


class LocalHub:
    """The hub on this machine (its folder under RADFLOW_HOME)."""

    def __init__(self) -> None:
        from radflow.hub.home import HubHome
        from radflow.hub.services import HubServices
        from radflow.settings import get_settings

        self.home = HubHome.of(get_settings().home)
        if not self.home.config() or not HubServices(self.home).prefect_healthy():
            raise ConfigurationError("the hub on this machine is not running",
                                     fix="radflow hub up (or pass --hub URL to use another)")

    def start(self, name: str, params: dict, sites: list[str] | None, deadline: float,
              skip_unable: bool = False) -> dict:
        import getpass

        from radflow.hub.studies import launch

        return launch(self.home, name, params, sites, deadline, f"cli:{getpass.getuser()}",
                      skip_unable=skip_unable)

    def schedules(self, action: str, **kw: Any) -> Any:
        import getpass

        from radflow.hub import schedules

        if action == "list":
            return schedules.rows(self.home)
        if action == "create":
            return schedules.create(self.home, created_by=f"cli:{getpass.getuser()}", **kw)
        if action == "delete":
            return schedules.delete(self.home, kw["slug"])
        return schedules.set_active(self.home, kw["slug"], action == "resume")

    def readiness(self, name: str, sites: list[str] | None) -> dict:
        from radflow.hub.fleet import readiness
        from radflow.hub.study_jobs import check_study

        engine = self.home.engine()
        return readiness(engine, name, check_study(engine, name, sites))

    def state(self, study_id: str) -> dict | None:
        from radflow.hub.studies import study_state

        return study_state(self.home, study_id)

    def rows(self) -> list[dict]:
        from radflow.hub.studies import study_rows

        return study_rows(self.home)

    def flows(self) -> list[dict]:
        from radflow.hub.studies import flow_rows

        return flow_rows(self.home.engine())


class RemoteHub:
    """A hub reached through its API with a coordinator's token."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.token = os.environ.get("RADFLOW_HUB_TOKEN", "")
        if not self.token:
            raise ConfigurationError("RADFLOW_HUB_TOKEN is not set",
                                     fix="ask the hub's operator for a token (radflow hub token "
                                         "create NAME) and export it")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        try:
            answer = requests.request(method, f"{self.url}/v1{path}", timeout=60, headers={
                "Authorization": f"Bearer {self.token}"}, **kwargs)
        except requests.RequestException as exc:
            raise TransientError(f"the hub at {self.url} did not answer "
                                 f"({type(exc).__name__})",
                                 fix="check --hub and that the hub is up") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            try:
                detail = answer.json().get("detail")
            except ValueError:
                detail = answer.text[:200]
            fix = {401: "the token is wrong, expired or revoked: ask the hub's operator for a "
                        "new one (radflow hub token create)",
                   503: "the hub's operator starts it: radflow hub up"}.get(
                answer.status_code, "see the message")
            raise ConfigurationError(f"the hub refused: {detail} (HTTP {answer.status_code})",
                                     fix=fix)
        return answer.json()

    def start(self, name: str, params: dict, sites: list[str] | None, deadline: float,
              skip_unable: bool = False) -> dict:
        return self._call("POST", "/studies", json={"name": name, "params": params,
                                                    "sites": sites, "deadline_s": deadline,
                                                    "skip_unable": skip_unable})

    def readiness(self, name: str, sites: list[str] | None) -> dict:
        return self._call("GET", f"/flows/{name}/readiness", params={"sites": sites or []})

    def schedules(self, action: str, **kw: Any) -> Any:
        if action == "list":
            return self._call("GET", "/schedules")
        if action == "create":
            return self._call("POST", "/schedules", json=kw)
        if action == "delete":
            return self._call("DELETE", f"/schedules/{kw['slug']}")
        return self._call("PATCH", f"/schedules/{kw['slug']}",
                          json={"active": action == "resume"})

    def state(self, study_id: str) -> dict | None:
        return self._call("GET", f"/studies/{study_id}")

    def rows(self) -> list[dict]:
        return self._call("GET", "/studies")

    def flows(self) -> list[dict]:
        return self._call("GET", "/flows")


def _hub(url: str | None) -> LocalHub | RemoteHub:
    return RemoteHub(url) if url else LocalHub()


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``k=v`` pairs: v as JSON when it parses (``bins=32``, ``terms=["age"]``), else a list
    when it has commas (``features=a,b``), else a string.

    Raises:
        ConfigurationError: an item is not ``k=v``.
    """
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--param {item!r} is not KEY=VALUE",
                                     fix="e.g. --param bins=32 --param features=a,b")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = [v.strip() for v in value.split(",")] if "," in value else value
    return out


@app.command("run")
def run(name: str = typer.Argument(..., help="The flow, e.g. federated-cohort-count."),
        cohort: Path | None = typer.Option(None, help="A cohort definition (JSON file)."),
        param: list[str] | None = typer.Option(None, "--param", help="A parameter KEY=VALUE "
                                               "(JSON, or a,b for a list); repeatable."),
        sites: list[str] | None = typer.Option(None, "--sites", help="Only these sites."),
        deadline: float = typer.Option(600, help="Seconds to wait for the sites."),
        wait: bool = typer.Option(True, help="Wait for the result (else print the run)."),
        skip_unable: bool = typer.Option(False, "--skip-unable", help="Leave out the sites "
                                         "whose versions are below the flow's need (radflow "
                                         "study check) instead of refusing to start."),
        hub: str | None = HUB, json_out: bool = JSON) -> None:
    """Run a study at the enrolled sites and combine what they release. It runs as a flow run
    of ``federated-study/NAME`` on the hub's Prefect (watch it there). It is refused before it
    starts when a chosen site reports a radflow or plugin version below the flow's need."""
    from radflow.cohorts.definition import CohortDefinition

    target = _hub(hub)
    params: dict = parse_params(param)
    if params:  # `--param segments=liver` for a list parameter means ["liver"]
        flow = next((f for f in target.flows() if f["name"] == name), None)
        properties = ((flow or {}).get("parameter_schema") or {}).get("properties", {})
        for key, value in params.items():
            if properties.get(key, {}).get("type") == "array" and not isinstance(value, list):
                params[key] = [value]
    if cohort is not None:
        params["cohort"] = CohortDefinition.parse(cohort.read_text()).canonical()
    started = target.start(name, params, sites or None, deadline, skip_unable)
    for row in started.get("left_out") or []:
        console.print(f"left out {row['site']}: "
                      + "; ".join(b["text"] for b in row["blocking"]), highlight=False)
    if not wait:
        report(json_out, started, f"study {started['study']}: running, watch it at "
                                  f"{started['url']}")
        return
    give_up = time.monotonic() + deadline + 120
    result = None
    while time.monotonic() < give_up:
        try:
            result = _look(target, started)
        except RadflowError as exc:
            if not is_transient(exc):
                raise
            result = None  # the hub restarts, say: it resumes the study; ask again
        if result is not None and result["state"] == "finished":
            break
        time.sleep(0.25)  # (a count study takes seconds: a second's poll was a tenth of it)
    if result is None or result["state"] != "finished":
        raise SiteError(f"study {started['study']} has no result after {deadline + 120:.0f} s",
                        fix=f"see its run at {started['url']}")
    result["flow_run"] = started["url"]
    if json_out:
        print_json(result)
        return
    show(result)


def _look(target: LocalHub | RemoteHub, started: dict) -> dict | None:
    """The study's state; raises when it ended without a result: it failed before it queued
    its jobs, or its newest coordinator run (a study resumed after a hub restart has a new
    one) ended other than completed."""
    result = target.state(started["study"])
    if result is not None and result["state"] == "failed":
        raise SiteError(f"study {started['study']} failed before it queued its jobs: "
                        f"{result.get('message', '')}", fix=f"see {started['url']}")
    if isinstance(target, LocalHub) and (result is None or result["state"] != "finished"):
        runs = target.home.prefect(timeout=10).flow_runs_tagged(f"study:{started['study']}",
                                                                limit=1)
        if runs and runs[0].is_final and not runs[0].ok:
            raise SiteError(f"study {started['study']} ended {runs[0].state}: "
                            f"{runs[0].message or ''}", fix=f"see {started['url']}")
    return result


def _plain_table(title: str, rows: list[dict]) -> list[str]:
    """A table as plain lines, never truncated (wide results stay readable in a log)."""
    from radflow.hub.studies import fmt

    columns = list(rows[0])
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join
    return [f"  {title}:", "    " + line(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
            *("    " + line(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells)]


def show(result: dict) -> None:
    from radflow.hub.studies import fmt, split_combined

    say = lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    combined = result.get("combined", {})
    count = "matching" in combined
    say(f"study {result['study']}: {result['flow']} ({result['version'][:19]})"
        + (f", started by {result['started_by']}" if result.get("started_by") else ""))
    for s in result["sites"]:
        value = (s.get("release") or {}).get("matching")
        what = s.get("refusal") or (("<k" if value is None else value) if count
                                    and s["status"] == "released" else "")
        say(f"  {s['site']:<20} {s['status']:<9} {what}")
    if count:
        bound = " (at least: a site suppressed a small count)" if \
            combined["matching_is_lower_bound"] else ""
        say(f"  total: {combined['matching']}{bound}")
    else:
        tables, scalars = split_combined(combined)
        for title, rows in tables:
            for text in _plain_table(title, rows):
                say(text)
        for key, value in scalars:
            say(f"  {key}: {fmt(value)}")
    for i, done in enumerate(result.get("rounds") or []):
        say(f"  round {i} {done['round']}: {done.get('seconds', 0):.1f} s, "
            + ", ".join(f"{site} {v['status']}" for site, v in done["sites"].items()))
    if result.get("artifacts"):
        say(f"  artifacts (on the hub): {', '.join(result['artifacts'])}")
    if result.get("flow_run"):
        say(f"  flow run: {result['flow_run']}")


@app.command("check")
def check(name: str = typer.Argument(..., help="The flow, e.g. federated-cohort-count."),
          sites: list[str] | None = typer.Option(None, "--sites", help="Only these sites."),
          hub: str | None = HUB, json_out: bool = JSON) -> None:
    """Which sites can run the newest version of a flow, and why the others cannot: each
    site's reported radflow and plugin versions against the version's need, its approval, its
    weights policy, its silence (from the fleet: radflow hub fleet). Exit 1 when a site
    cannot run it."""
    target = _hub(hub)
    ready = target.readiness(name, sites or None)
    if ready is None:
        raise ConfigurationError(f"no version of {name!r} is published on this hub",
                                 fix="see radflow study flows")
    if json_out:
        print_json(ready)
    else:
        needs = ", ".join(f"{d}{s}" for d, s in ready["requires"].items()) or "nothing declared"
        console.print(f"{name} {ready['version'][:19]} needs {needs}", highlight=False)
        for row in ready["sites"]:
            verdict = {True: "can run it", False: "cannot run it", None: "unknown"}[
                row["can_run"]]
            console.print(f"  {row['site']:<20} {verdict:<14} radflow {row['radflow'] or '?'}",
                          highlight=False)
            for b in row["blocking"]:
                console.print(f"      {b['code']}: {b['text']} ({b['fix']})", highlight=False)
            for w in row["warnings"]:
                console.print(f"      warning {w['code']}: {w['text']}", highlight=False)
    if any(row["can_run"] is False for row in ready["sites"]):
        raise typer.Exit(1)


@app.command("flows")
def flows(hub: str | None = HUB, json_out: bool = JSON) -> None:
    """The published flows a study can run, with the parameters each takes."""
    import json

    target = _hub(hub)
    rows = target.flows()
    if json_out:
        print_json(rows)
        return
    for row in rows:
        schema = row.get("parameter_schema") or {}
        required = set(schema.get("required", []))
        console.print(f"[bold]{row['name']}[/bold]  version {row['hash'][:19]}  "
                      f"({row['publisher']})", highlight=False)
        for key, spec in (schema.get("properties") or {}).items():
            mark = "required" if key in required else f"default {json.dumps(spec['default'])}" \
                if "default" in spec else "optional"
            console.print(f"    --param {key}  {spec.get('type', '')}  {mark}  "
                          f"{spec.get('description', '')}".rstrip(), highlight=False)


@app.command("list")
def list_studies(hub: str | None = HUB, json_out: bool = JSON) -> None:
    """The studies of the hub, newest first."""
    from radflow.cli.common import emit_rows

    rows = _hub(hub).rows()
    if not rows and not json_out:
        console.print("no study yet: radflow study run NAME --cohort FILE", highlight=False)
    emit_rows(rows, json_out, lambda r: f"{r['study']}  {r['flow']:<24} "
              f"{r['state']:<9} {r['created_at'][:19]}  {r['started_by'] or ''}")


@app.command("show")
def show_one(study: str = typer.Argument(..., help="The study's id (radflow study list)."),
             hub: str | None = HUB, json_out: bool = JSON) -> None:
    """One study: each site's release, refusal code or absence, and the combined answer."""
    found = _hub(hub).state(study) if study.isalnum() else None
    if found is None:
        raise ConfigurationError(f"there is no study {study!r} on this hub",
                                 fix="see radflow study list")
    if json_out:
        print_json(found)
        return
    show(found)
