"""`radflow export`: de-identified export (PS3.15 Annex E) for a trusted third party."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, console, print_json

app = typer.Typer(help="De-identified export of images and their results (PS3.15 Annex E).",
                  no_args_is_help=True)
project_app = typer.Typer(help="Export projects: the profile, options and key of an export.",
                          no_args_is_help=True)
app.add_typer(project_app, name="project")


def _user() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@project_app.command("create")
def project_create(
    name: str,
    option: list[str] = typer.Option([], "--option", "-o", help=(
        "An option of PS3.15 Table E.1-1 (repeat it): retain-longitudinal-modified-dates, "
        "retain-patient-characteristics, retain-device-identity, retain-institution-identity, "
        "clean-descriptors, clean-structured-content.")),
    safe_private: list[str] = typer.Option([], "--safe-private", help=(
        "A private attribute that may stay, as GROUP,CREATOR,ELEMENT in hex (repeat it).")),
    pixel_rules: Path | None = typer.Option(None, "--pixel-rules", help=(
        "A JSON file of pixel rules: [{\"where\": {\"Modality\": \"US\"}, \"boxes\": "
        "[[x, y, width, height]]}].")),
    profile: str = typer.Option("basic", help="The profile (basic: Annex E's basic profile)."),
    purpose: str = typer.Option("", help="What the exports are for (shown to the steward)."),
    site: str | None = SITE, json_out: bool = JSON,
) -> None:
    """Make an export project and its key (kept at the site, never exported)."""
    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.export import projects

    ctx = site_context(site)
    rules = json.loads(pixel_rules.read_text()) if pixel_rules else []
    project = projects.create(ctx.paths.root, name, profile=profile, options=option,
                              safe_private=safe_private, pixel_rules=rules, purpose=purpose,
                              created_by=_user())
    record(ctx.catalog_url, actor=project.created_by, action="export.project",
           subject=f"export-project:{name}",
           detail={"profile": project.profile, "options": project.options,
                   "safe_private": project.safe_private, "pixel_rules": len(project.pixel_rules)})
    if json_out:
        print_json(project.__dict__)
        return
    console.print(f"export project {name}: profile {profile}, options "
                  f"{', '.join(project.options) or 'none'}", highlight=False)


@project_app.command("list")
def project_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The site's export projects."""
    from radflow.cli.common import site_context
    from radflow.export import projects

    rows = [p.__dict__ for p in projects.listing(site_context(site).paths.root)]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        console.print(f"{row['name']}  {row['profile']}  {', '.join(row['options']) or '-'}  "
                      f"{row['purpose']}", highlight=False)
    if not rows:
        console.print("no export project yet")


@app.command("files")
def export_files(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders of them."),
    project: str = typer.Option(..., "--project", "-p", help="The export project."),
    out: Path = typer.Option(..., "--out", help="An empty folder for the de-identified set."),
    site: str | None = SITE, json_out: bool = JSON,
) -> None:
    """De-identify DICOM files into a folder with a manifest, by a project's rules (audited)."""
    import pydicom

    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.errors import ConfigurationError, DicomInputError
    from radflow.export import projects
    from radflow.export.writer import manifest_hash, write_set

    ctx = site_context(site)
    chosen = projects.load(ctx.paths.root, project)
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"{out} is not empty", fix="give --out an empty or new folder")
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))
             if f.is_file()]

    def datasets():
        for f in files:
            try:
                yield pydicom.dcmread(f)
            except Exception as exc:  # pydicom raises many kinds
                raise DicomInputError(f"{f} is not a readable DICOM file: {exc}",
                                      fix="remove it from the export, or repair it") from exc

    report, _ = write_set(datasets(), chosen.deidentifier(ctx.paths.root), out,
                                 project=project)
    digest = manifest_hash(out)
    record(ctx.catalog_url, actor=_user(), action="export.files",
           subject=f"export-project:{project}",
           detail={"files": report.instances, "held_back": len(report.held),
                   "patients": len(report.patients), "manifest_sha256": digest,
                   "options": chosen.options, "to": str(out)})
    summary = {"project": project, "out": str(out), "instances": report.instances,
               "manifest_sha256": digest,
               "held_back": [{"series_uid": h.series_uid, "reason": h.reason}
                             for h in report.held.values()]}
    if json_out:
        print_json(summary)
        return
    console.print(f"{report.instances} instance(s) de-identified into {out} (manifest "
                  f"{digest[:12]})", highlight=False)
    for held in report.held.values():
        console.print(f"held back: series {held.series_uid} ({held.modality}): {held.reason}",
                      highlight=False)
