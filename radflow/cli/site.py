"""``radflow site``: bring a site up, look at it, bring it down."""

from __future__ import annotations

from typing import Optional

import typer

from radflow.cli.common import console, print_json
from radflow.site import SiteManager, SiteStatus

app = typer.Typer(help="Start, inspect and stop a site (Orthanc + Prefect server + worker).",
                  no_args_is_help=True)

NAME = typer.Option(..., "--name", "-n", help="Site name, e.g. 'lab'.")
JSON = typer.Option(False, "--json", help="Machine-readable output.")
_STYLE = {"running": "green", "degraded": "yellow", "unhealthy": "yellow", "stopped": "red"}


def show(status: SiteStatus) -> None:
    colour = _STYLE.get(status.state, "white")
    console.print(f"site [bold]{status.name}[/bold]: [{colour}]{status.state}[/{colour}]  "
                  f"({status.root})", highlight=False)
    for c in status.components:
        colour = _STYLE.get(c.state, "white")
        pid = f"pid {c.pid}" if c.pid else ""
        console.print(f"  {c.name:<15} [{colour}]{c.state:<9}[/{colour}] {pid:<10} {c.detail}",
                      highlight=False)
        for key, url in c.urls.items():
            console.print(f"      {key:<9} {url}", highlight=False, soft_wrap=True)


@app.command()
def up(
    name: str = NAME,
    orthanc_http_port: int | None = typer.Option(None, help="Orthanc HTTP port (default: first free from 8042)."),
    orthanc_dicom_port: int | None = typer.Option(None, help="Orthanc DICOM port (default: first free from 4242)."),
    prefect_port: int | None = typer.Option(None, help="Prefect server port (default: first free from 4200)."),
    database_url: str | None = typer.Option(
        None, help="Prefect database, e.g. postgresql+asyncpg://user:pw@host/db (default: SQLite)."),
    stable_age: int | None = typer.Option(
        None, help="Seconds without a new instance before Orthanc calls a series stable."),
    allow_modality: list[str] | None = typer.Option(
        None, help="DICOM peer allowed to send, NAME=AET@HOST:PORT (repeatable)."),
    json_out: bool = JSON,
) -> None:
    """Start the site's Orthanc, Prefect server and worker (those not running yet)."""
    manager = SiteManager()
    ports = {"orthanc_http": orthanc_http_port, "orthanc_dicom": orthanc_dicom_port,
             "prefect": prefect_port}
    say = (lambda _m: None) if json_out else (lambda m: console.print(f"  {m}"))
    if not json_out:
        console.print(f"starting site [bold]{name}[/bold] under {manager.home}")
    status = manager.up(name, ports=ports, database_url=database_url, stable_age=stable_age,
                        modalities=allow_modality, progress=say)
    if json_out:
        print_json(status.to_dict())
        return
    show(status)
    console.print(f"credentials: `radflow site credentials --name {name}` "
                  f"(kept owner-only in {status.root / 'secrets.json'})")


@app.command()
def status(
    name: str | None = typer.Option(None, "--name", "-n", help="Site name (default: all sites)."),
    json_out: bool = JSON,
) -> None:
    """Report each component's health and URLs. Exit status 1 if a site is not fully running."""
    manager = SiteManager()
    names = [name] if name else manager.sites()
    statuses = [manager.status(n) for n in names]
    if json_out:
        print_json([s.to_dict() for s in statuses] if name is None else statuses[0].to_dict())
    else:
        if not statuses:
            console.print(f"no sites under {manager.home}; start one with `radflow site up --name NAME`")
        for s in statuses:
            show(s)
    if any(s.state != "running" for s in statuses):
        raise typer.Exit(1)


@app.command()
def down(
    name: str | None = typer.Option(None, "--name", "-n", help="Site name."),
    all_sites: bool = typer.Option(False, "--all", help="Stop every site under RADFLOW_HOME."),
) -> None:
    """Stop everything the site started (worker, Prefect server, Orthanc)."""
    manager = SiteManager()
    if not name and not all_sites:
        raise typer.BadParameter("give --name NAME or --all")
    for site in manager.sites() if all_sites else [name]:
        stopped = manager.down(site)
        console.print(f"site {site}: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")


@app.command()
def restart(
    name: str = NAME,
    component: str = typer.Option(..., "--component", "-c",
                                  help="orthanc, prefect-server, worker or watcher."),
) -> None:
    """Restart one component of a running site."""
    status = SiteManager().restart(name, component)
    console.print(f"{status.name}: {status.state} (pid {status.pid}) {status.detail}")


@app.command("list")
def list_sites(json_out: bool = JSON) -> None:
    """List the sites under RADFLOW_HOME."""
    manager = SiteManager()
    if json_out:
        print_json(manager.sites())
        return
    for site in manager.sites():
        console.print(site)


@app.command()
def credentials(name: str = NAME, json_out: bool = JSON) -> None:
    """Print the site's Orthanc and Prefect credentials (for the browser logins)."""
    ctx = SiteManager().context(name)
    user, password = ctx.orthanc_auth()
    data = {"orthanc": {"url": ctx.orthanc_url, "username": user, "password": password},
            "prefect": {"url": ctx.prefect_url,
                        "auth_string": ctx.secrets.prefect_auth_string.get_secret_value()}}
    if json_out:
        print_json(data)
        return
    console.print(f"Orthanc  {ctx.orthanc_url}  user [bold]{user}[/bold]  password [bold]{password}[/bold]")
    p_user, p_password = ctx.prefect_auth()
    console.print(f"Prefect  {ctx.prefect_url}  user [bold]{p_user}[/bold]  password [bold]{p_password}[/bold]")


@app.command()
def logs(
    name: str = NAME,
    component: str = typer.Option("orthanc", "--component", "-c",
                                  help="orthanc, prefect-server, worker or watcher."),
    lines: int = typer.Option(40, "--lines", help="How many lines from the end."),
) -> None:
    """Show the end of a component's log."""
    from radflow.site.components import COMPONENTS

    ctx = SiteManager().context(name)
    match = [c for c in COMPONENTS if c.name == component]
    if not match:
        raise typer.BadParameter(f"unknown component {component!r}; one of "
                                 + ", ".join(c.name for c in COMPONENTS))
    console.print(match[0].process(ctx).log_tail(lines), highlight=False, markup=False)
