"""Sites that are never online, on the command line (phase 13): the hub writes a study's job
for such a site to a signed file, the site runs it from that file and writes its signed release
file, and the hub joins that file to its study.

    radflow hub job export STUDY --site NAME --out job.json        # on the hub
    radflow site job import job.json --out release.json --site NAME # at the site
    radflow hub release import release.json                        # on the hub
"""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, err_console, report

hub_job_app = typer.Typer(help="A study's job for a site that is never online, as a signed "
                               "file.", no_args_is_help=True)
hub_release_app = typer.Typer(help="A release file from a site that is never online.",
                              no_args_is_help=True)
site_job_app = typer.Typer(help="A job carried by hand from the hub (a site that is never "
                                "online).", no_args_is_help=True)


def _user() -> str:
    import getpass

    return getpass.getuser()


def _refused(exc: Exception) -> None:
    from radflow.federation.envelope import Refused

    if isinstance(exc, Refused):
        err_console.print(f"[bold red]refused ({exc.code}):[/bold red] {exc.message}",
                          highlight=False)
        if exc.fix:
            err_console.print(f"[bold]fix:[/bold] {exc.fix}", highlight=False)
        raise typer.Exit(2)


@hub_job_app.command("export")
def job_export(study: str, site: str = typer.Option(..., help="The site that is never online."),
               out: Path = typer.Option(..., help="The job file to write."),
               json_out: bool = JSON) -> None:
    """Write the site's open job of STUDY to a file signed with the hub's key: the job, the
    signed version and its bundle, the study's parameters and deadline. Carry it to the site."""
    from radflow.cli.hub import _home
    from radflow.hub.offline import export_job

    data, job = export_job(_home(), study, site, f"cli:{_user()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    report(json_out, {"job": job["id"], "study": study, "site": site, "file": str(out),
                      "bytes": len(data)},
           f"job {job['id']} of study {study} for {site}: {out} ({len(data)} bytes); at the "
           f"site: radflow site job import {out.name} --out release.json --site {site}")


@hub_release_app.command("import")
def release_import(file: Path, json_out: bool = JSON) -> None:
    """Verify a site's release file (its enrolled key) and join it to its study."""
    from radflow.cli.hub import _home
    from radflow.federation.envelope import Refused
    from radflow.hub.offline import import_release

    try:
        said = import_release(_home(), file.read_bytes(), f"cli:{_user()}")
    except Refused as exc:
        _refused(exc)
        raise
    report(json_out, said, f"release of job {said['job']} from {said['site']} "
                           f"({said['outcome']}) joined to study {said['study']}")


@site_job_app.command("import")
def job_import(file: Path, out: Path = typer.Option(..., help="The release file to write."),
               site: str | None = SITE,
               timeout: float = typer.Option(3600.0, help="Seconds to wait for the site part."),
               json_out: bool = JSON) -> None:
    """Run a job from the hub's job file here (the same checks as a job that came over the
    network), and write the release, signed with this site's key, to OUT. Carry it back."""
    from radflow.cli.common import site_context
    from radflow.federation.envelope import Refused
    from radflow.federation.offline import Waiting, import_job

    ctx = site_context(site)
    try:
        said = import_job(ctx, file.read_bytes(), out, timeout,
                          say=lambda text: err_console.print(text, highlight=False))
    except Refused as exc:
        _refused(exc)
        raise
    except Waiting as exc:
        err_console.print(f"[bold]waiting:[/bold] {exc}", highlight=False)
        raise typer.Exit(3) from None
    report(json_out, said, f"job {said['job']}: {said['outcome']}; the release file is {out}:"
                           " carry it to the hub (radflow hub release import FILE)")


def hub_key(out: Path | None = typer.Option(None, help="Write the public key (PEM) here."),
            json_out: bool = JSON) -> None:
    """The hub's public signing key and its fingerprint: for a site that joins without a
    network (radflow site join-offline --hub-key FILE)."""
    from radflow.cli.hub import _home
    from radflow.federation.signing import fingerprint

    home = _home()
    public = home.key.with_suffix(".key.pub").read_bytes()
    if out is not None:
        out.write_bytes(public)
    report(json_out, {"fingerprint": fingerprint(public), "file": str(out) if out else None,
                      "public_key_pem": public.decode()},
           f"hub key {fingerprint(public)}" + (f": {out}" if out else f"\n{public.decode()}"))


def enrol_by_file(name: str, public_key: Path, json_out: bool) -> None:
    """Enrol a site that is never online with its public key file (no code crosses)."""
    from radflow.cli.hub import _home
    from radflow.hub import registry

    engine = _home().engine()
    code = registry.add_site(engine, name)
    row = registry.enrol(engine, name, code, public_key.read_text())
    report(json_out, {"site": name, "status": row.status, "fingerprint": row.fingerprint},
           f"{name} enrolled with key {row.fingerprint} (compare it with the site's by "
           f"another channel); its jobs go by file: radflow hub job export STUDY --site {name}")


def join_offline(hub_key: Path = typer.Option(..., help="The hub's public key (radflow hub "
                                                         "key --out FILE)."),
                 out: Path = typer.Option(..., help="Write this site's public key here, for "
                                                     "the hub's operator."),
                 site: str | None = SITE, json_out: bool = JSON) -> None:
    """Join a hub without a network: this site's key pair (the private key stays here), the
    hub's key pinned; jobs then come as files (radflow site job import)."""
    from radflow.cli.common import site_context
    from radflow.federation.offline import join_offline as join

    ctx = site_context(site)
    info = join(ctx.paths.root, ctx.name, hub_key.read_bytes())
    out.write_text(info.pop("public_key_pem"))
    report(json_out, info | {"public_key_file": str(out)},
           f"{ctx.name} joined offline\n  this site's key  {info['site_fingerprint']}\n  the "
           f"hub's key    {info['hub_fingerprint']}  (compare both by another channel)\n  "
           f"give {out} to the hub's operator: radflow hub site add {ctx.name} --public-key "
           f"{out.name}")
