"""``radflow hub``: the hub's federation API and its site registry (phase 6, in progress: the
hub's own Prefect server, jobs and studies are still to come)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests
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


def _process(home):
    from radflow.site.process import ManagedProcess

    return ManagedProcess("federation-api", home.root / "run", home.root / "logs" / "api.log")


def _healthy(home) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{home.config()['port']}/healthz", timeout=2).ok
    except (requests.RequestException, KeyError):
        return False


@app.command()
def up(port: int | None = typer.Option(None, help="Federation API port (default 8700)."),
       bind: str = typer.Option("127.0.0.1", help="Address (beyond loopback: TLS needed)."),
       certfile: Path | None = typer.Option(None, help="TLS certificate (PEM)."),
       keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
       public_url: str | None = typer.Option(None, help="The URL sites use (behind TLS)."),
       json_out: bool = JSON) -> None:
    """Start the hub's federation API (creating the hub and its signing key if new)."""
    from radflow.errors import ConfigurationError, SiteError
    from radflow.federation.signing import fingerprint

    if bind not in ("127.0.0.1", "localhost", "::1") and not (certfile and keyfile):
        raise ConfigurationError(f"refusing to serve the hub on {bind} without TLS",
                                 fix="pass --certfile and --keyfile")
    home = _home()
    home.make(port, public_url)
    proc = _process(home)
    if proc.process() is None:
        argv = [sys.executable, "-m", "radflow.hub", "--home", str(home.root.parent),
                "--bind", bind]
        if certfile and keyfile:
            argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        proc.start(argv, {**_env(), "RADFLOW_HOME": str(home.root.parent)}, cwd=home.root)
    deadline = time.monotonic() + 30
    while not _healthy(home):
        if time.monotonic() > deadline or proc.process() is None:
            raise SiteError(f"the federation API did not start: {proc.log_tail(5)}",
                            fix=f"read {proc.log_path}")
        time.sleep(0.2)
    data = {"url": home.url(), "fingerprint": fingerprint(home.key.with_suffix(".key.pub")
                                                          .read_bytes())}
    report(json_out, data, f"hub up: {data['url']}  signing key {data['fingerprint']}")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


@app.command()
def status(json_out: bool = JSON) -> None:
    """Whether the federation API runs, its URL and its sites."""
    home = _home()
    running = _healthy(home) if home.config() else False
    from radflow.hub import registry

    sites = [{"name": s.name, "status": s.status}
             for s in (registry.sites(home.engine()) if home.config() else [])]
    data = {"state": "running" if running else "stopped", "url": home.url(), "sites": sites}
    listed = ", ".join(f"{s['name']} ({s['status']})" for s in sites) or "none"
    report(json_out, data, f"hub {data['state']}: {data['url']}  sites: {listed}")
    if not running:
        raise typer.Exit(1)


@app.command()
def down(json_out: bool = JSON) -> None:
    """Stop the hub's federation API."""
    stopped = _process(_home()).stop()
    report(json_out, {"stopped": bool(stopped)}, "hub: stopped" if stopped else "hub: not running")


@app.command()
def credentials(json_out: bool = JSON) -> None:
    """The hub's URL and its signing key's fingerprint (to compare with each site)."""
    from radflow.federation.signing import fingerprint

    home = _home()
    data = {"url": home.url(),
            "fingerprint": fingerprint(home.key.with_suffix(".key.pub").read_bytes())}
    report(json_out, data, f"{data['url']}  signing key {data['fingerprint']}")


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
              json_out: bool = JSON) -> None:
    """Run a study at the enrolled sites and combine what they release."""
    from radflow.cohorts.definition import CohortDefinition
    from radflow.hub.studies import run_study

    params: dict = {}
    if cohort is not None:
        params["cohort"] = CohortDefinition.parse(cohort.read_text()).canonical()
    home = _home()
    result = run_study(home.engine(), home.root, name, params, sites or None, deadline)
    if json_out:
        print_json(result)
        return
    combined = result["combined"]
    console.print(f"study {result['study']}: {name} ({result['version'][:19]})", highlight=False)
    for s in result["sites"]:
        value = (s.get("release") or {}).get("matching")
        what = s.get("refusal") or ("<k" if s["status"] == "released" and value is None
                                    else value if value is not None else s["status"])
        console.print(f"  {s['site']:<20} {s['status']:<9} {what}", highlight=False)
    if "matching" in combined:
        bound = " (at least: a site suppressed a small count)" if \
            combined["matching_is_lower_bound"] else ""
        console.print(f"  total: {combined['matching']}{bound}", highlight=False)
    console.print(f"  artifacts: {', '.join(result['artifacts'])}", highlight=False)
