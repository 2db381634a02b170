"""`radflow export`: de-identified export (PS3.15 Annex E) for a trusted third party."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, console, emit_rows, print_json

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
    emit_rows(rows, json_out, lambda row: f"{row['name']}  {row['profile']}  "
              f"{', '.join(row['options']) or '-'}  {row['purpose']}")
    if not rows and not json_out:
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
    from radflow.export.mapping import remember
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
    remember(ctx.paths.root, project, f"files-{digest[:12]}", report.patients)
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


def _show(entry: dict) -> str:
    what = entry["plan"]
    modalities = ", ".join(f"{n} {m or '?'}" for m, n in sorted(what["by_modality"].items()))
    kinds: dict[str, int] = {}
    for r in what["results"]:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    results = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no results"
    lines = [f"export {entry['id']}  {entry['state']}  project {entry['project']} "
             f"(options: {', '.join(entry['options']) or 'none'})",
             f"  cohort {what['cohort']}: {what['cohort_in_words']}",
             f"  {len(what['series'])} series ({modalities}), {results}, "
             f"{what['instances']} instances -> {entry['target']}",
             f"  requested by {entry['requested_by']} at {entry['requested_at']}"]
    if kinds.get("SR") and "clean-structured-content" not in entry["options"]:
        lines.append("  the SRs stay here: the project lacks the option clean-structured-content")
    if entry.get("decided_by"):
        lines.append(f"  {entry['state']} by {entry['decided_by']} {entry.get('reason') or ''}")
    if entry.get("result"):
        r = entry["result"]
        lines.append(f"  {r['instances']} instances written, manifest {r['manifest_sha256'][:12]}")
        lines += [f"  held back: series {h['series_uid']} ({h['modality']}): {h['reason']}"
                  for h in r["held_back"]]
    return "\n".join(lines)


@app.command("run")
def export_run(
    project: str = typer.Argument(..., help="The export project."),
    cohort: str = typer.Option(None, "--cohort", "-c", help="The saved cohort to export."),
    to: str = typer.Option(None, "--to", help="folder:PATH, zip:PATH.zip or dicomweb:URL."),
    request_id: str = typer.Option(None, "--request", help="Run this approved export instead."),
    site: str | None = SITE, json_out: bool = JSON,
) -> None:
    """Export a cohort de-identified: files the request (a data steward approves it where the
    policy says so), and exports at once when it is approved."""
    from radflow.cli.common import site_context
    from radflow.errors import ConfigurationError
    from radflow.export import run
    from radflow.federation.policy import load_policy

    ctx = site_context(site)
    root = ctx.paths.root
    if request_id is None:
        if not cohort or not to:
            raise ConfigurationError("an export needs --cohort and --to (or --request ID)",
                                     fix="e.g. radflow export run PROJECT --cohort NAME "
                                         "--to folder:PATH")
        entry = run.request(root, ctx.catalog_url, project=project, cohort=cohort, target=to,
                            actor=_user(),
                            requires_steward=load_policy(root).export_requires_steward)
        if entry["state"] == "waiting":
            if json_out:
                print_json(entry)
                return
            console.print(_show(entry), highlight=False)
            console.print(f"waits for a data steward: `radflow export approve {entry['id']}`, "
                          f"then `radflow export run {project} --request {entry['id']}`",
                          highlight=False)
            return
        request_id = entry["id"]
    entry = run.execute(root, ctx.catalog_url, ctx.orthanc_client(), request_id, actor=_user())
    if json_out:
        print_json(entry)
        return
    console.print(_show(entry), highlight=False)


@app.command("list")
def export_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The site's exports, newest first."""
    from radflow.cli.common import site_context
    from radflow.export import run

    entries = run.listing(site_context(site).paths.root)
    if json_out:
        print_json(entries)
        return
    for entry in entries:
        console.print(_show(entry), highlight=False)
    if not entries:
        console.print("no export yet")


@app.command("show")
def export_show(export_id: str, site: str | None = SITE, json_out: bool = JSON) -> None:
    """What an export takes and where it goes (what the steward decides on)."""
    from radflow.cli.common import site_context
    from radflow.export import run

    entry = run.load(site_context(site).paths.root, export_id)
    if json_out:
        print_json(entry)
        return
    console.print(_show(entry), highlight=False)


@app.command("approve")
def export_approve(export_id: str, reason: str = typer.Option("", help="A note."),
                   site: str | None = SITE, json_out: bool = JSON) -> None:
    """Approve an export (data steward): it may then run."""
    _decide(site, export_id, True, reason, json_out)


@app.command("decline")
def export_decline(export_id: str, reason: str = typer.Option(..., help="Why."),
                   site: str | None = SITE, json_out: bool = JSON) -> None:
    """Decline an export (data steward): it does not run."""
    _decide(site, export_id, False, reason, json_out)


def _decide(site: str | None, export_id: str, approve: bool, reason: str, json_out: bool) -> None:
    from radflow.cli.common import site_context
    from radflow.export import run

    ctx = site_context(site)
    entry = run.decide(ctx.paths.root, ctx.catalog_url, export_id, approve=approve,
                       actor=_user(), reason=reason)
    if json_out:
        print_json(entry)
        return
    console.print(_show(entry), highlight=False)


@app.command("reidentify")
def export_reidentify(
    pseudonym: str, project: str = typer.Option(..., "--project", "-p"),
    reason: str = typer.Option(..., help="Why (audited before the answer)."),
    site: str | None = SITE, json_out: bool = JSON,
) -> None:
    """The patient behind a pseudonym of a project's exports (data steward; audited)."""
    from radflow.cli.common import site_context
    from radflow.export.mapping import reidentify

    ctx = site_context(site)
    found = reidentify(ctx.paths.root, ctx.catalog_url, project, pseudonym, actor=_user(),
                       reason=reason)
    if json_out:
        print_json(found)
        return
    console.print(f"{pseudonym} is patient {found['patient_id']} (exports "
                  f"{', '.join(found['exports'])})", highlight=False)
