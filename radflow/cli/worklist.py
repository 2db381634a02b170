"""``radflow worklist``: where the site's web app is, and serving it by hand (beyond loopback,
with TLS). `radflow site up` starts it as the ``worklist`` component on loopback."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, report, site_context

app = typer.Typer(help="The clinicians' worklist: the site's web app.", no_args_is_help=True)


@app.command()
def url(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The worklist's address, its state, and who logs people in."""
    from radflow.site.components import component
    from radflow.web.idp import issuer, web_url

    ctx = site_context(site)
    if ctx.config.ports.worklist is None:
        from radflow.errors import ConfigurationError

        raise ConfigurationError(f"site {ctx.name!r} has no worklist port yet",
                                 fix=f"run `radflow site up --site {ctx.name}`")
    status = component("worklist").status(ctx)
    data = {"url": f"{web_url(ctx)}/reviews", "state": status.state, "issuer": issuer(ctx)}
    report(json_out, data, f"{data['url']}  ({status.state}; log-in through {data['issuer']}; "
                           f"demo log-ins: radflow site credentials --site {ctx.name})")


@app.command()
def serve(site: str | None = SITE,
          bind: str = typer.Option("127.0.0.1", help="Address to listen on."),
          certfile: Path | None = typer.Option(None, help="TLS certificate (PEM)."),
          keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
          json_out: bool = JSON) -> None:
    """Serve the web app in the foreground (stop the `worklist` component first). Beyond
    loopback, serve it over TLS and set `radflow site up --public-url https://...` so the
    provider redirects browsers to that address; session cookies are then Secure."""
    from radflow.errors import ConfigurationError
    from radflow.web.__main__ import main

    ctx = site_context(site)
    if bind not in ("127.0.0.1", "localhost", "::1") and not (certfile and keyfile):
        raise ConfigurationError(f"refusing to serve the worklist on {bind} without TLS",
                                 fix="pass --certfile and --keyfile")
    scheme = "https" if certfile and keyfile else "http"
    report(json_out, {"serving": f"{scheme}://{bind}:{ctx.config.ports.worklist}"},
           f"serving the worklist of {ctx.name} on {scheme}://{bind}:{ctx.config.ports.worklist}")
    argv = ["--site", ctx.name, "--bind", bind]
    if certfile and keyfile:
        argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    raise typer.Exit(main(argv))
