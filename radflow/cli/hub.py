"""``radflow hub``: the hub's federation API and its site registry (phase 6, in progress: the
hub's own Prefect server, jobs and studies are still to come)."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, console, print_json, report

app = typer.Typer(help="The hub: federation API, site enrolment and revocation.",
                  no_args_is_help=True)
site_app = typer.Typer(help="The sites the hub knows.", no_args_is_help=True)
app.add_typer(site_app, name="site")


def _home():
    from radflow.hub.home import HubHome
    from radflow.settings import get_settings

    return HubHome.of(get_settings().home)


def _services():
    from radflow.hub.services import HubServices

    return HubServices(_home())


@app.command()
def up(port: int | None = typer.Option(None, help="Federation API port (default 8700)."),
       prefect_port: int | None = typer.Option(None, help="The hub Prefect server's port "
                                                         "(default: API port + 10)."),
       bind: str | None = typer.Option(None, help="The federation API's address (default "
                                                  "127.0.0.1; beyond loopback: TLS needed)."),
       certfile: Path | None = typer.Option(None, help="TLS certificate (PEM)."),
       keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
       public_url: str | None = typer.Option(None, help="The URL sites use (behind TLS)."),
       json_out: bool = JSON) -> None:
    """Start the hub (creating it and its signing key if new): its Prefect server and worker,
    where coordinator flows run, and the federation API the sites' agents call. Settings given
    once are kept for the next `hub up`."""
    from radflow.errors import ConfigurationError
    from radflow.federation.signing import fingerprint

    if bool(certfile) != bool(keyfile):
        raise ConfigurationError("TLS needs both --certfile and --keyfile",
                                 fix="pass both, or neither (loopback only)")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{path} does not exist", fix="pass a PEM file")
    services = _services()
    previous = services.home.config()
    bind_to = bind or previous.get("bind") or "127.0.0.1"
    if bind_to not in ("127.0.0.1", "localhost", "::1") and not \
            (certfile or previous.get("certfile")):
        raise ConfigurationError(f"refusing to serve the hub on {bind_to} without TLS",
                                 fix="pass --certfile and --keyfile")
    config = services.home.make(port, public_url, prefect_port, bind, certfile, keyfile)
    tls = (Path(config["certfile"]), Path(config["keyfile"])) if config["tls"] else (None, None)
    services.up(bind_to, *tls, say=(lambda _: None) if json_out else
                (lambda line: console.print(f"  {line}", highlight=False)))
    home = services.home
    data = {"url": home.url(), "prefect": home.prefect_url,
            "fingerprint": fingerprint(home.key.with_suffix(".key.pub").read_bytes())}
    report(json_out, data, f"hub up: {data['url']}  signing key {data['fingerprint']}\n"
                           f"  coordinators watch studies at {data['prefect']} "
                           "(radflow hub credentials)")


@app.command()
def status(json_out: bool = JSON) -> None:
    """Whether the hub's processes run, its URLs and its sites."""
    services = _services()
    home = services.home
    configured = bool(home.config())
    parts = services.status() if configured else {}
    running = configured and all(v == "running" for v in parts.values())
    from radflow.hub import registry

    sites = [{"name": s.name, "status": s.status}
             for s in (registry.sites(home.engine()) if configured else [])]
    data = {"state": "running" if running else "stopped", "url": home.url(),
            "prefect": home.prefect_url, "components": parts, "sites": sites}
    listed = ", ".join(f"{s['name']} ({s['status']})" for s in sites) or "none"
    report(json_out, data, f"hub {data['state']}: {data['url']}  "
                           + "  ".join(f"{k}: {v}" for k, v in parts.items())
                           + f"\n  sites: {listed}")
    if not running:
        raise typer.Exit(1)


@app.command()
def down(json_out: bool = JSON) -> None:
    """Stop the hub's worker, federation API and Prefect server."""
    stopped = _services().down()
    report(json_out, {"stopped": stopped},
           f"hub: stopped {', '.join(stopped)}" if stopped else "hub: not running")


@app.command()
def credentials(json_out: bool = JSON) -> None:
    """The hub's URL, its signing key's fingerprint (to compare with each site), and the log-in
    of the hub's Prefect UI (for coordinators on the hub; never give it to a site)."""
    from radflow.federation.signing import fingerprint

    home = _home()
    user, _, password = home.prefect_auth_string().partition(":")
    data = {"url": home.url(),
            "fingerprint": fingerprint(home.key.with_suffix(".key.pub").read_bytes()),
            "prefect": {"url": home.prefect_url, "username": user, "password": password}}
    report(json_out, data, f"{data['url']}  signing key {data['fingerprint']}\n"
                           f"hub Prefect UI {home.prefect_url}  user {user}  password {password}")


@site_app.command("add")
def site_add(name: str = typer.Argument(..., help="The site's name, as it calls itself."),
             json_out: bool = JSON) -> None:
    """Register a site and print its one-time enrolment code (valid 24 h, kept only hashed)."""
    from radflow.hub import registry

    home = _home()
    code = registry.add_site(home.engine(), name)
    data = {"site": name, "code": code, "hub": home.url()}
    if json_out:
        print_json(data)
        return
    console.print(f"enrolment code for {name}: [bold]{code}[/bold] (shown once, valid 24 h)\n"
                  f"at the site: radflow site join {home.url()} --code {code} --site {name}",
                  highlight=False)


@site_app.command("list")
def site_list(json_out: bool = JSON) -> None:
    """The sites, their state and key fingerprints."""
    from radflow.hub import registry

    rows = [{"name": s.name, "status": s.status, "fingerprint": s.fingerprint}
            for s in registry.sites(_home().engine())]
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['name']:<24} {r['status']:<9} {r['fingerprint'] or ''}",
                      highlight=False)


@site_app.command("revoke")
def site_revoke(name: str, json_out: bool = JSON) -> None:
    """Cut a site off at once: its tokens stop working and it gets no new one."""
    from radflow.hub import registry

    registry.revoke_site(_home().engine(), name)
    report(json_out, {"site": name, "status": "revoked"}, f"{name}: revoked")


def publish(path: Path = typer.Argument(..., help="The flow package's folder."),
            json_out: bool = JSON) -> None:
    """Build a flow package into a content-addressed bundle, sign its manifest with the hub's
    key, and offer it to the sites (each must approve it by hash)."""
    import getpass

    from radflow.federation.bundle import build
    from radflow.federation.manifest import sign_version
    from radflow.federation.signing import load
    from radflow.hub import registry

    home = _home()
    if not home.key.exists():
        from radflow.errors import ConfigurationError

        raise ConfigurationError("there is no hub here yet", fix="run `radflow hub up` first")
    manifest, bundle = build(path, publisher=f"{getpass.getuser()}@hub")
    signed = sign_version(manifest, load(home.key))
    new = registry.publish(home.engine(), signed, bundle)
    from radflow.hub.services import HubServices, apply_hub_deployments

    if HubServices(home).prefect_healthy():  # else `radflow hub up` applies it
        apply_hub_deployments(home)
    data = {"name": manifest.name, "label": manifest.label, "hash": signed.hash, "new": new,
            "files": len(manifest.files), "plugins": manifest.plugins}
    report(json_out, data, f"{manifest.name} {manifest.label}: {signed.hash} "
                           f"({'published' if new else 'published before'}; sites approve it with "
                           f"radflow site approve {signed.hash})")


study_app = typer.Typer(help="Cross-site studies (run on the hub).", no_args_is_help=True)


@study_app.command("run")
def study_run(name: str = typer.Argument(..., help="The flow, e.g. federated-cohort-count."),
              cohort: Path | None = typer.Option(None, help="A cohort definition (JSON file)."),
              sites: list[str] | None = typer.Option(None, "--sites", help="Only these sites."),
              deadline: float = typer.Option(600, help="Seconds to wait for the sites."),
              wait: bool = typer.Option(True, help="Wait for the result (else print the run)."),
              json_out: bool = JSON) -> None:
    """Run a study at the enrolled sites and combine what they release. It runs as a flow run
    of ``federated-study/NAME`` on the hub's Prefect (watch it there)."""
    import json

    from radflow.cohorts.definition import CohortDefinition
    from radflow.errors import ConfigurationError, SiteError
    from radflow.hub import registry
    from radflow.hub.services import HubServices

    params: dict = {}
    if cohort is not None:
        params["cohort"] = CohortDefinition.parse(cohort.read_text()).canonical()
    home = _home()
    if not home.config() or not HubServices(home).prefect_healthy():
        raise ConfigurationError("the hub is not running", fix="radflow hub up")
    study_id = registry.new_study_id()
    api = home.prefect()
    if name not in {v.name for v in registry.versions(home.engine())}:
        raise ConfigurationError(f"no version of {name!r} is published on this hub",
                                 fix="radflow publish PATH-OF-THE-FLOW-PACKAGE (e.g. "
                                     f"federation/flows/{name})")
    run = api.create_flow_run(f"federated-study/{name}", {
        "name": name, "params": params, "sites": sites or None, "deadline_s": deadline,
        "study_id": study_id}, tags=(f"study:{study_id}",))
    if not wait:
        report(json_out, {"study": study_id, "flow_run": run.id,
                          "url": api.flow_run_ui(run.id)},
               f"study {study_id}: running, watch it at {api.flow_run_ui(run.id)}")
        return
    done = api.wait(run.id, timeout=deadline + 120)
    out = home.root / "studies" / study_id / "result.json"
    if not done.ok or not out.exists():
        raise SiteError(f"study {study_id} ended {done.state}: {done.message or ''}",
                        fix=f"see its run at {api.flow_run_ui(run.id)}")
    result = json.loads(out.read_text())
    result["flow_run"] = api.flow_run_ui(run.id)
    if json_out:
        print_json(result)
        return
    show_study(result)


def show_study(result: dict) -> None:
    combined = result["combined"]
    console.print(f"study {result['study']}: {result['flow']} ({result['version'][:19]})",
                  highlight=False)
    for s in result["sites"]:
        value = (s.get("release") or {}).get("matching")
        what = s.get("refusal") or ("<k" if s["status"] == "released" and value is None
                                    else value if value is not None else s["status"])
        console.print(f"  {s['site']:<20} {s['status']:<9} {what}", highlight=False)
    if "matching" in combined:
        bound = " (at least: a site suppressed a small count)" if \
            combined["matching_is_lower_bound"] else ""
        console.print(f"  total: {combined['matching']}{bound}", highlight=False)
    console.print(f"  artifacts: {', '.join(result.get('artifacts', []))}", highlight=False)
    if result.get("flow_run"):
        console.print(f"  flow run: {result['flow_run']}", highlight=False)


@study_app.command("list")
def study_list(json_out: bool = JSON) -> None:
    """The studies run on this hub, newest first."""
    import json

    from radflow.cli.common import emit_rows

    folder = _home().root / "studies"
    results = [json.loads(p.read_text()) for p in folder.glob("*/result.json")]
    results.sort(key=lambda r: r.get("finished", ""), reverse=True)
    rows = [{"study": r["study"], "flow": r["flow"], "version": r["version"],
             "finished": r.get("finished"), "sites": {s["site"]: s.get("refusal", s["status"])
                                                      for s in r["sites"]}} for r in results]
    emit_rows(rows, json_out, lambda r: f"{r['study']}  {r['flow']}  {r['finished'] or ''}  "
              + ", ".join(f"{k}: {v}" for k, v in r["sites"].items()))


@study_app.command("show")
def study_show(study: str = typer.Argument(..., help="The study's id (radflow study list)."),
               json_out: bool = JSON) -> None:
    """One study's result: each site's release or refusal, the combined answer, artifacts."""
    import json

    from radflow.errors import ConfigurationError

    out = _home().root / "studies" / study / "result.json"
    if not study.isalnum() or not out.exists():
        raise ConfigurationError(f"there is no study {study!r} on this hub",
                                 fix="see radflow study list")
    result = json.loads(out.read_text())
    if json_out:
        print_json(result)
        return
    show_study(result)
