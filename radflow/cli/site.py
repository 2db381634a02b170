"""``radflow site``: bring a site up, look at it, bring it down."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, console, print_json, report
from radflow.site import SiteManager, SiteStatus

app = typer.Typer(help="Start, inspect and stop a site (Orthanc + Prefect server + worker + "
                       "watcher).", no_args_is_help=True)

NEW_SITE = typer.Option(..., "--site", "-s", envvar="RADFLOW_SITE", help="Site name, e.g. 'lab'.")
_STYLE = {"running": "green", "degraded": "yellow", "unhealthy": "yellow", "stopped": "red"}


def show(status: SiteStatus) -> None:
    colour = _STYLE.get(status.state, "white")
    console.print(f"site [bold]{status.name}[/bold]: [{colour}]{status.state}[/{colour}]  "
                  f"({status.root})", highlight=False)
    for c in status.components:
        colour = _STYLE.get(c.state, "white")
        pid = f"pid {c.pid}" if c.pid else ""
        restarted = ""
        if c.restarts:
            restarted = f"  restarted {c.restarts} time{'s' if c.restarts > 1 else ''}"
            if c.restart_error:
                restarted += f" (last attempt failed: {c.restart_error})"
        console.print(f"  {c.name:<15} [{colour}]{c.state:<9}[/{colour}] {pid:<10} {c.detail}"
                      f"{restarted}", highlight=False)
        for key, url in c.urls.items():
            console.print(f"      {key:<9} {url}", highlight=False, soft_wrap=True)


@app.command()
def up(
    site: str = NEW_SITE,
    orthanc_http_port: int | None = typer.Option(
        None, help="Orthanc HTTP port (default: first free from 8042)."),
    orthanc_dicom_port: int | None = typer.Option(
        None, help="Orthanc DICOM port (default: first free from 4242)."),
    prefect_port: int | None = typer.Option(
        None, help="Prefect server port (default: first free from 4200)."),
    database_url: str | None = typer.Option(
        None, envvar="RADFLOW_DATABASE_URL", show_default=False,
        help="The site's Prefect database, postgresql://USER:PASSWORD@HOST:PORT/DB ('' goes back "
             "to SQLite; kept in secrets.json)."),
    catalog_url: str | None = typer.Option(
        None, envvar="RADFLOW_CATALOG_URL", show_default=False,
        help="The catalog (and worklist) database, postgresql://… ('' goes back to SQLite)."),
    orthanc_index_url: str | None = typer.Option(
        None, envvar="RADFLOW_ORTHANC_INDEX_URL", show_default=False,
        help="Orthanc's index on PostgreSQL (Debian's orthanc-postgresql plugin), postgresql://… "
             "('' goes back to SQLite). A new index is empty: set it before sending images."),
    stable_age: int | None = typer.Option(
        None, help="Seconds without a new instance before Orthanc calls a series stable."),
    allow_modality: list[str] | None = typer.Option(
        None, help="DICOM peer allowed to send, NAME=AET@HOST:PORT (repeatable)."),
    worklist_port: int | None = typer.Option(
        None, help="The web app (worklist) port (default: first free from 8800)."),
    idp_port: int | None = typer.Option(
        None, help="The embedded OpenID provider's port (default: first free from 8900)."),
    oidc_issuer: str | None = typer.Option(
        None, help="Log people in through this OpenID issuer instead of the embedded provider "
                   "('' goes back to the embedded one)."),
    oidc_client_id: str | None = typer.Option(None, help="The web app's client id there."),
    oidc_client_secret: str | None = typer.Option(
        None, envvar="RADFLOW_OIDC_CLIENT_SECRET", show_default=False,
        help="Its client secret (kept in secrets.json; prefer the environment variable "
             "RADFLOW_OIDC_CLIENT_SECRET to keep it out of your shell history)."),
    oidc_roles_claim: str | None = typer.Option(
        None, help="The claim that lists a user's roles, e.g. groups or realm_access.roles."),
    session_hours: float | None = typer.Option(None, help="Web sessions expire after this."),
    public_url: str | None = typer.Option(
        None, help="The web app's address as browsers reach it when it is served beyond "
                   "loopback (see `radflow worklist serve`)."),
    work_pool_type: str | None = typer.Option(
        None, help="Where flow runs execute: process (default), docker or kubernetes "
                   "(docs/containers.md)."),
    image_registry: str | None = typer.Option(
        None, help="Where docker/kubernetes pools pull radflow's images from."),
    json_out: bool = JSON,
) -> None:
    """Start the site's components that are not running (creating the site if it is new)."""
    manager = SiteManager()
    ports = {"orthanc_http": orthanc_http_port, "orthanc_dicom": orthanc_dicom_port,
             "prefect": prefect_port, "worklist": worklist_port, "idp": idp_port}
    oidc = {k: v for k, v in {"issuer": oidc_issuer, "client_id": oidc_client_id,
                              "roles_claim": oidc_roles_claim,
                              "session_hours": session_hours,
                              "public_url": public_url}.items() if v is not None}
    say = (lambda _m: None) if json_out else (lambda m: console.print(f"  {m}", highlight=False))
    if not json_out:
        console.print(f"starting site [bold]{site}[/bold] under {manager.home}")
    status = manager.up(site, ports=ports, database_url=database_url, catalog_url=catalog_url,
                        orthanc_index_url=orthanc_index_url, stable_age=stable_age,
                        work_pool_type=work_pool_type, image_registry=image_registry,
                        modalities=allow_modality, oidc=oidc, oidc_client_secret=oidc_client_secret,
                        progress=say)
    if json_out:
        print_json(status.to_dict())
        return
    show(status)
    console.print(f"credentials and the worklist's log-ins: `radflow site credentials --site "
                  f"{site}` (kept owner-only in {status.root / 'secrets.json'})")


@app.command()
def status(
    site: str | None = typer.Option(None, "--site", "-s", envvar="RADFLOW_SITE",
                                    help="Site name (default: every site)."),
    json_out: bool = JSON,
) -> None:
    """Report each component's health and URLs. Exit status 1 if a site is not fully running."""
    manager = SiteManager()
    names = [manager.resolve(site)] if site else manager.sites()
    statuses = [manager.status(n) for n in names]
    if json_out:
        print_json([s.to_dict() for s in statuses] if site is None else statuses[0].to_dict())
    else:
        if not statuses:
            console.print(f"no sites under {manager.home}; start one with "
                          "`radflow site up --site NAME`")
        for s in statuses:
            show(s)
    if any(s.state != "running" for s in statuses):
        raise typer.Exit(1)


@app.command()
def down(
    site: str | None = SITE,
    all_sites: bool = typer.Option(False, "--all", help="Stop every site under RADFLOW_HOME."),
    json_out: bool = JSON,
) -> None:
    """Stop everything the site started (watcher, worker, Prefect server, Orthanc)."""
    manager = SiteManager()
    names = manager.sites() if all_sites else [manager.resolve(site)]
    result = {name: manager.down(name) for name in names}
    if json_out:
        print_json({name: {"stopped": stopped} for name, stopped in result.items()})
        return
    for name, stopped in result.items():
        console.print(f"site {name}: stopped "
                      f"{', '.join(stopped) if stopped else 'nothing (not running)'}")


@app.command()
def restart(
    site: str | None = SITE,
    component: str = typer.Option(..., "--component", "-c",
                                  help="orthanc, prefect-server, worker, watcher, idp, worklist or reviews."),
    json_out: bool = JSON,
) -> None:
    """Restart one component of a running site."""
    manager = SiteManager()
    status = manager.restart(manager.resolve(site), component)
    report(json_out, vars(status), f"{status.name}: {status.state} (pid {status.pid}) "
                                   f"{status.detail}")


@app.command()
def upgrade(site: str | None = SITE, json_out: bool = JSON) -> None:
    """After installing a newer radflow: migrate the site's catalog, restart the site and
    verify that nothing was lost (counts, the audit chain and its history, Orthanc's
    instances), with a copy of a SQLite catalog kept under backups/. Audited; the hub's fleet
    hears the new versions from the agent as it starts."""
    from radflow.site.upgrade import upgrade_site

    manager = SiteManager()
    name = manager.resolve(site)
    say = (lambda _m: None) if json_out else (lambda m: console.print(f"  {m}", highlight=False))
    result = upgrade_site(manager, name, say)
    if json_out:
        print_json(result)
        return
    before, after = result["before"]["counts"], result["after"]["counts"]
    console.print(f"site {name} upgraded: radflow {result['from']['radflow'] or 'unknown'} -> "
                  f"{result['to']['radflow']}, schema {result['from']['schema'] or 'none'} -> "
                  f"{result['to']['schema']}; {result['state']}", highlight=False)
    console.print("  kept: " + ", ".join(f"{k.replace('_', ' ')} {before[k]} -> {after[k]}"
                                         for k in before), highlight=False)
    console.print("  checks: " + ", ".join(f"{k} ok" for k in result["checks"]),
                  highlight=False)


@app.command("install-service")
def install_service(
    site: str | None = SITE,
    user: str | None = typer.Option(None, help="The user the site runs as (default: you)."),
    out: Path | None = typer.Option(None, help="Folder for the unit (default: the site's "
                                                "systemd/ folder)."),
    memory_max: str | None = typer.Option(None, help="MemoryMax for the whole site, e.g. 24G."),
    cpu_quota: str | None = typer.Option(None, help="CPUQuota for the whole site, e.g. 300% "
                                                    "for three cores."),
    json_out: bool = JSON,
) -> None:
    """Write the site's systemd unit (radflow-site-NAME.service) and print how to install it
    (docs/operations.md). The unit holds no secret."""
    from radflow.site.systemd import Limits, site_unit

    manager = SiteManager()
    ctx = manager.context(manager.resolve(site))
    folder = out or ctx.paths.root / "systemd"
    folder.mkdir(parents=True, exist_ok=True)
    unit = folder / f"radflow-site-{ctx.name}.service"
    unit.write_text(site_unit(ctx, user=user, limits=Limits(memory_max, cpu_quota)))
    steps = [f"sudo cp {unit} /etc/systemd/system/", "sudo systemctl daemon-reload",
             f"sudo systemctl enable --now radflow-site-{ctx.name}"]
    report(json_out, {"unit": str(unit), "install": steps},
           f"wrote {unit}\nbefore: radflow site down --site {ctx.name}; then install it:\n  "
           + "\n  ".join(steps))


@app.command("list")
def list_sites(json_out: bool = JSON) -> None:
    """List the sites under RADFLOW_HOME."""
    manager = SiteManager()
    if json_out:
        print_json(manager.sites())
        return
    for name in manager.sites():
        console.print(name)


@app.command()
def credentials(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Print the site's Orthanc and Prefect credentials and the worklist's demo log-ins (for
    the browser)."""
    from radflow.cli.common import site_context
    from radflow.site.config import DEMO_USERS
    from radflow.web.idp import web_url

    ctx = site_context(site)
    user, password = ctx.orthanc_auth()
    data = {"orthanc": {"url": ctx.orthanc_url, "username": user, "password": password},
            "prefect": {"url": ctx.prefect_url,
                        "auth_string": ctx.secrets.prefect_auth_string.get_secret_value()}}
    embedded = ctx.config.oidc.issuer is None and ctx.config.ports.worklist is not None
    if embedded:
        data["worklist"] = {"url": f"{web_url(ctx)}/reviews", "users": {
            name: {"password": secret.get_secret_value(), "roles": list(DEMO_USERS.get(name, ()))}
            for name, secret in ctx.secrets.demo_users.items()}}
    if json_out:
        print_json(data)
        return
    p_user, p_password = ctx.prefect_auth()
    rows = [("Orthanc", ctx.orthanc_url, user, password),
            ("Prefect", ctx.prefect_url, p_user, p_password)]
    if embedded:
        rows += [("Worklist", data["worklist"]["url"], name, info["password"])
                 for name, info in data["worklist"]["users"].items()]
    for what, url, name, secret in rows:
        console.print(f"{what:<8} {url}  user [bold]{name}[/bold]  password [bold]{secret}[/bold]",
                      highlight=False)


@app.command()
def logs(
    site: str | None = SITE,
    component: str = typer.Option("orthanc", "--component", "-c",
                                  help="orthanc, prefect-server, worker, watcher, idp, worklist or reviews."),
    lines: int = typer.Option(40, "--lines", help="How many lines from the end."),
    json_out: bool = JSON,
) -> None:
    """Show the end of a component's log."""
    from radflow.cli.common import site_context
    from radflow.site.components import component as find_component

    ctx = site_context(site)
    text = find_component(component).process(ctx).log_tail(lines)
    if json_out:
        print_json({"component": component, "lines": text.splitlines()})
        return
    console.print(text, highlight=False, markup=False)


audit_app = typer.Typer(help="The site's append-only, hash-chained audit log.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Recompute the audit log's hash chain; exit 1 if any event was changed, removed or
    reordered (the first broken one is named)."""
    from dataclasses import asdict

    from radflow.audit import verify
    from radflow.cli.common import site_context

    check = verify(site_context(site).catalog_url)
    if json_out:
        print_json(asdict(check))
    elif check.ok:
        console.print(f"audit log intact: {check.events} events, head {check.head}",
                      highlight=False)
    else:
        console.print(f"[red]audit log broken at event {check.broken_at}[/red]: {check.reason} "
                      f"({check.events} events read)", highlight=False)
    if not check.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(site: str | None = SITE,
                 out: Path | None = typer.Option(None, "--out", help="File to write (default: "
                                                 "stdout), JSON lines."),
                 json_out: bool = JSON) -> None:
    """Write the audit log as JSON lines, each event with its hashes; the last line's hash is
    the head to keep on record."""
    from radflow.audit import export_lines
    from radflow.cli.common import site_context

    lines = list(export_lines(site_context(site).catalog_url))
    if out is None:
        for line in lines:
            print(line)
        return
    out.write_text("".join(f"{line}\n" for line in lines))
    report(json_out, {"events": len(lines), "file": str(out)},
           f"wrote {len(lines)} events to {out}")


@app.command("work-pool")
def work_pool(
    site: str | None = SITE,
    pool_type: str | None = typer.Option(None, "--type", help="process, docker or kubernetes "
                                                              "(default: the site's)."),
    json_out: bool = JSON,
) -> None:
    """The site's work pool for a pool type: its base job template and each deployment's job
    variables (image, CPU, memory, GPU), validated as Prefect validates them. Use it to create
    the pool yourself (`prefect work-pool create --base-job-template`)."""
    from radflow.cli.common import site_context
    from radflow.site.workpools import base_job_template, check, site_job_variables

    ctx = site_context(site)
    kind = pool_type or ctx.config.work_pool_type
    template = base_job_template(kind)
    variables = site_job_variables(kind, ctx.config.image_registry, site=ctx.name,
                                   home=str(ctx.settings.home))
    for values in variables.values():
        check(kind, template, values)
    data = {"work_pool": f"{ctx.name}-{kind}", "type": kind, "base_job_template": template,
            "job_variables": variables}
    if json_out:
        print_json(data)
        return
    console.print(f"work pool [bold]{data['work_pool']}[/bold] ({kind}); valid for Prefect",
                  highlight=False)
    for flow, values in variables.items():
        shown = ", ".join(f"{k}={v}" for k, v in values.items() if k != "env") or "(none)"
        console.print(f"  {flow.rsplit('.', 1)[-1]:<28} {shown}", highlight=False, soft_wrap=True)
