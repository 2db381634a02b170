"""``radflow hub``: the hub's processes (its Prefect server and worker, the federation API, the
coordinators' web app and its OpenID provider), its site registry and coordinators' API
tokens."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, console, print_json, report
from radflow.errors import ConfigurationError

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
def up(port: int | None = typer.Option(None, help="Federation API port (default 8700, or the "
                                                  "next free one; kept for the next `hub up`)."),
       prefect_port: int | None = typer.Option(None, help="The hub Prefect server's port "
                                                         "(default: API port + 10)."),
       bind: str | None = typer.Option(None, help="The federation API's address (default "
                                                  "127.0.0.1; beyond loopback: TLS needed)."),
       certfile: Path | None = typer.Option(None, help="TLS certificate (PEM)."),
       keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
       public_url: str | None = typer.Option(None, help="The URL sites use (behind TLS)."),
       web_port: int | None = typer.Option(None, help="The coordinators' web app's port "
                                                      "(default: API port + 20)."),
       idp_port: int | None = typer.Option(None, help="The embedded OpenID provider's port "
                                                      "(default: API port + 30)."),
       database_url: str | None = typer.Option(
           None, envvar="RADFLOW_HUB_DATABASE_URL", show_default=False,
           help="The hub database (sites, versions, studies), postgresql://USER:PASSWORD@HOST:"
                "PORT/DB ('' goes back to SQLite; kept in secrets.json)."),
       prefect_database_url: str | None = typer.Option(
           None, envvar="RADFLOW_HUB_PREFECT_DATABASE_URL", show_default=False,
           help="The hub Prefect server's database, postgresql://… ('' goes back to SQLite)."),
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
    config = services.home.make(port, public_url, prefect_port, bind, certfile, keyfile,
                                web_port=web_port, idp_port=idp_port,
                                databases={"database_url": database_url,
                                           "prefect_database_url": prefect_database_url})
    tls = (Path(config["certfile"]), Path(config["keyfile"])) if config["tls"] else (None, None)
    services.up(bind_to, *tls, say=(lambda _: None) if json_out else
                (lambda line: console.print(f"  {line}", highlight=False)))
    home = services.home
    data = {"url": home.url(), "prefect": home.prefect_url, "web": f"{home.web_url()}/studies",
            "fingerprint": fingerprint(home.key.with_suffix(".key.pub").read_bytes())}
    report(json_out, data, f"hub up: {data['url']}  signing key {data['fingerprint']}\n"
                           f"  coordinators log in at {data['web']} and watch the runs at "
                           f"{data['prefect']} (radflow hub credentials)")


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
            "prefect": home.prefect_url, "web": home.web_url() if configured else None,
            "components": parts, "sites": sites}
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
    from radflow.hub.home import HUB_USERS

    user, _, password = home.prefect_auth_string().partition(":")
    data = {"url": home.url(),
            "fingerprint": fingerprint(home.key.with_suffix(".key.pub").read_bytes()),
            "prefect": {"url": home.prefect_url, "username": user, "password": password}}
    lines = [f"{data['url']}  signing key {data['fingerprint']}",
             f"hub Prefect UI {home.prefect_url}  user {user}  password {password}"]
    if not home.oidc().get("issuer"):  # the embedded provider's demo log-ins
        users = home.secrets().get("users", {})
        data["web"] = {"url": f"{home.web_url()}/studies", "users": {
            name: {"password": users[name], "roles": list(roles)}
            for name, roles in HUB_USERS.items() if name in users}}
        lines += [f"web app {data['web']['url']}  user {name}  password {info['password']}"
                  f"  ({', '.join(info['roles'])})" for name, info in data["web"]["users"].items()]
    report(json_out, data, "\n".join(lines))


@app.command("install-service")
def install_service(
    user: str | None = typer.Option(None, help="The user the hub runs as (default: you)."),
    out: Path | None = typer.Option(None, help="Folder for the unit (default: the hub's "
                                                "systemd/ folder)."),
    memory_max: str | None = typer.Option(None, help="MemoryMax for the hub, e.g. 8G."),
    cpu_quota: str | None = typer.Option(None, help="CPUQuota for the hub, e.g. 200%."),
    json_out: bool = JSON,
) -> None:
    """Write the hub's systemd unit (radflow-hub.service) and print how to install it."""
    from radflow.settings import get_settings
    from radflow.site.systemd import Limits, hub_unit

    home = _home()
    folder = out or home.root / "systemd"
    folder.mkdir(parents=True, exist_ok=True)
    unit = folder / "radflow-hub.service"
    unit.write_text(hub_unit(home.root, get_settings().home, user=user,
                             limits=Limits(memory_max, cpu_quota)))
    steps = [f"sudo cp {unit} /etc/systemd/system/", "sudo systemctl daemon-reload",
             "sudo systemctl enable --now radflow-hub"]
    report(json_out, {"unit": str(unit), "install": steps},
           f"wrote {unit}\nbefore: radflow hub down; then install it:\n  " + "\n  ".join(steps))


@site_app.command("add")
def site_add(name: str = typer.Argument(..., help="The site's name, as it calls itself."),
             public_key: Path | None = typer.Option(None, help="Never online: its key file."),
             json_out: bool = JSON) -> None:
    """Register a site and print its one-time enrolment code (valid 24 h, kept only hashed)."""
    from radflow.cli.offline import enrol_by_file
    from radflow.hub import registry

    if public_key is not None:
        return enrol_by_file(name, public_key, json_out)
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


@app.command()
def fleet(site: str | None = typer.Option(None, help="One site's report history instead."),
          json_out: bool = JSON) -> None:
    """Every site as its agent last reported: health, last heard, versions (with the drift
    from the newest in the fleet), models, approvals pending, its last study."""
    from radflow.hub import fleet as hub_fleet

    engine = _home().engine()
    if site is not None:
        rows = hub_fleet.history(engine, site)
        if json_out:
            print_json(rows)
            return
        for r in rows:
            plugins = ", ".join(f"{p['distribution']} {p['version']}" for p in r["plugins"])
            console.print(f"{r['received_at']}  {r['health']['state']:<9} radflow "
                          f"{r['radflow']}  {plugins}", highlight=False)
        if not rows:
            console.print(f"{site} has not reported (its agent reports once a minute)")
        return
    rows = hub_fleet.fleet(engine)
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("site", "health", "last heard", "radflow", "drift", "models",
                   "pending approvals", "queue", "last study"):
        table.add_column(column)
    for r in rows:
        heard = ("never" if r["heard_seconds_ago"] is None
                 else f"{r['heard_seconds_ago']} s ago") + (" (silent)" if r["silent"] else "")
        health = r["health"]["state"] if r["health"] else "-"
        study = r["last_study"]
        table.add_row(
            r["site"] + ("" if r["status"] == "enrolled" else f" ({r['status']})"), health,
            heard, r["radflow"] or "-", "; ".join(r["drift"]) or "none",
            ", ".join(m["name"] for m in r["models"]) or "-",
            ", ".join(r["pending_approvals"]) or "-",
            "-" if r["queue"] is None else str(r["queue"]),
            f"{study['flow']} ({study['status']})" if study else "-")
    console.print(table)


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


token_app = typer.Typer(help="Personal API tokens of coordinators (for `radflow study --hub`).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(name: str = typer.Argument(..., help="Who holds it, e.g. a.smith@uni.example"),
                 role: str = typer.Option("coordinator", help="coordinator or admin"),
                 days: int = typer.Option(90, help="Days until it expires (1-366)."),
                 json_out: bool = JSON) -> None:
    """Make an API token (shown once; the hub keeps only its hash)."""
    from radflow.hub import registry

    home = _home()
    token_id, token = registry.create_api_token(home.engine(), name, role, days)
    data = {"id": token_id, "name": name, "role": role, "days": days, "token": token,
            "hub": home.url()}
    report(json_out, data, f"API token {token_id} for {name} ({role}, {days} days), shown once:\n"
                           f"  export RADFLOW_HUB_TOKEN={token}\n"
                           f"  radflow study list --hub {home.url()}")


@token_app.command("list")
def token_list(json_out: bool = JSON) -> None:
    """The API tokens: id, holder, role, expiry, revoked or not (never the token)."""
    from radflow.cli.common import emit_rows
    from radflow.hub import registry

    rows = [{"id": t.id, "name": t.name, "role": t.role, "expires_at": t.expires_at.isoformat(),
             "revoked": t.revoked_at is not None} for t in registry.api_tokens(_home().engine())]
    emit_rows(rows, json_out, lambda r: f"{r['id']}  {r['name']:<30} {r['role']:<12} "
              f"until {r['expires_at'][:10]}{'  REVOKED' if r['revoked'] else ''}")


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (radflow hub token "
                                                          "list)."),
                 json_out: bool = JSON) -> None:
    """Revoke an API token at once."""
    from radflow.hub import registry

    registry.revoke_api_token(_home().engine(), token_id)
    report(json_out, {"id": token_id, "revoked": True}, f"API token {token_id}: revoked")


alerts_app = typer.Typer(help="Silence alerts: a Prefect automation on the hub's Prefect that "
                              "notifies you when a site's agent has not been heard for a while.")
app.add_typer(alerts_app, name="alerts")


def _running_home():
    home = _home()
    from radflow.hub.services import HubServices

    if not HubServices(home).prefect_healthy():
        raise ConfigurationError("the hub's Prefect server is not running",
                                 fix="radflow hub up")
    return home


@alerts_app.callback(invoke_without_command=True)
def alerts_show(ctx: typer.Context,
                test: bool = typer.Option(False, "--test", help="Send one notification "
                                          "through the alert's block now."),
                json_out: bool = JSON) -> None:
    """The silence alert as the hub's Prefect holds it (its automation)."""
    if ctx.invoked_subcommand is not None:
        return
    from radflow.hub import alerts

    home = _running_home()
    now = alerts.current(home)
    if test:
        now["test_sent_through"] = alerts.send_test(home)
    if json_out:
        print_json(now)
    elif not now["enabled"]:
        console.print("no silence alert: radflow hub alerts set --webhook URL "
                      "[--silent-after 5m]", highlight=False)
    else:
        console.print(f"{now['description']} (automation {now['id']})", highlight=False)
        if test:
            console.print("a test notification was sent", highlight=False)


@alerts_app.command("set")
def alerts_set(webhook: str | None = typer.Option(None, help="POST each alert as JSON "
                                                  "({subject, text}) to this URL."),
               block: str | None = typer.Option(None, help="Or send it through a notification "
                                                "block made in the hub's Prefect UI "
                                                "(TYPE/NAME, e.g. sendgrid-email/on-call)."),
               silent_after: str = typer.Option("5m", help="Silence that raises the alert: "
                                                "90s, 5m, 1h (at least 10 s)."),
               json_out: bool = JSON) -> None:
    """Alert when a site's agent has not been heard for --silent-after (its long poll reaches
    the hub every 20 s at most, its report every minute). Replaces the alert set before."""
    from radflow.hub import alerts

    home = _running_home()
    made = alerts.configure(home, alerts.parse_duration(silent_after), webhook, block)
    report(json_out, made, f"silence alert set: {made['description']}")


@alerts_app.command("off")
def alerts_off(json_out: bool = JSON) -> None:
    """Remove the silence alert (the notification block stays)."""
    from radflow.hub import alerts

    removed = alerts.remove(_running_home())
    report(json_out, {"removed": removed},
           "silence alert removed" if removed else "there was no silence alert")
