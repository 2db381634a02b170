"""``radflow cohort``: saved, portable filters over the site catalog."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, console, emit_rows, print_json, report, site_catalog_url

app = typer.Typer(help="Cohorts: portable JSON filters over the catalog.", no_args_is_help=True)
FILE = typer.Option(None, "--file", help="Definition as a JSON file.")
WHERE = typer.Option(None, "--where", help="Definition as JSON text.")
FILTER = typer.Option(None, "--filter", "-f",
                      help="FIELD OP VALUE, e.g. 'modality=CT' 'slice_thickness<=5' "
                      "'manufacturer~siemens' (repeatable; all must hold).")


def _definition(name: str | None, file: Path | None, where: str | None, filters: list[str] | None,
                session):
    from radflow.cohorts import CohortDefinition, load_cohort, parse_short

    given = [x for x in (name, file, where, filters) if x]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of: a cohort NAME, --file, --where, --filter")
    if name:
        return load_cohort(session, name)[0]
    if file:
        return CohortDefinition.parse(file.read_text())
    if where:
        return CohortDefinition.parse(where)
    return parse_short(filters)


@app.command()
def create(
    name: str = typer.Argument(..., help="Cohort name."),
    site: str | None = SITE, file: Path | None = FILE, where: str | None = WHERE,
    filters: list[str] | None = FILTER,
    description: str | None = typer.Option(None, help="What the cohort is for."),
    replace: bool = typer.Option(False, help="Overwrite a cohort of this name."),
    json_out: bool = JSON,
) -> None:
    """Save a cohort; prints its content hash and how many series match here."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import count_series, save_cohort

    with session_scope(site_catalog_url(site)) as session:
        definition = _definition(None, file, where, filters, session)
        save_cohort(session, name, definition, description=description, replace=replace)
        n = count_series(session, definition)
    if json_out:
        print_json({"name": name, "hash": definition.content_hash, "count": n})
        return
    console.print(f"cohort [bold]{name}[/bold]: {n} series  ({definition.content_hash})",
                  highlight=False)


@app.command("list")
def list_(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The saved cohorts with their hashes and current counts."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import CohortDefinition, count_series, list_cohorts

    with session_scope(site_catalog_url(site)) as session:
        rows = [{"name": r.name, "hash": r.content_hash, "description": r.description,
                 "count": count_series(session, CohortDefinition.parse(r.definition))}
                for r in list_cohorts(session)]
    emit_rows(rows, json_out, lambda r: f"{r['name']:<24} {r['count']:>7} series  "
              f"{r['hash'][:23]}...  {r['description'] or ''}")


@app.command()
def show(name: str, site: str | None = SITE, json_out: bool = JSON) -> None:
    """A cohort's canonical definition (portable to other sites) and hash."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import load_cohort

    with session_scope(site_catalog_url(site)) as session:
        definition, record = load_cohort(session, name)
    data = {"name": name, "description": record.description, "hash": definition.content_hash,
            "definition": definition.canonical()}
    if json_out:
        print_json(data)
        return
    console.print(f"cohort {name}  {definition.content_hash}", highlight=False)
    console.print_json(json.dumps(definition.canonical()))


@app.command()
def count(name: str | None = typer.Argument(None), site: str | None = SITE,
          file: Path | None = FILE, where: str | None = WHERE,
          filters: list[str] | None = FILTER, json_out: bool = JSON) -> None:
    """How many series match a saved cohort or a definition."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import count_series

    with session_scope(site_catalog_url(site)) as session:
        definition = _definition(name, file, where, filters, session)
        n = count_series(session, definition)
    if json_out:
        print_json({"count": n, "hash": definition.content_hash})
    else:
        console.print(f"{n} series  ({definition.content_hash})", highlight=False)


@app.command()
def series(name: str | None = typer.Argument(None), site: str | None = SITE,
           file: Path | None = FILE, where: str | None = WHERE,
           filters: list[str] | None = FILTER,
           limit: int = typer.Option(0, help="At most this many (0: all)."), json_out: bool = JSON) -> None:
    """The series that match (Orthanc id, modality, date, description)."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import select_series

    with session_scope(site_catalog_url(site)) as session:
        definition = _definition(name, file, where, filters, session)
        rows = [{"orthanc_id": s.orthanc_id, "series_uid": s.series_uid, "modality": s.modality,
                 "study_date": s.study_date, "manufacturer": s.manufacturer,
                 "description": s.series_description, "instances": s.num_instances,
                 "status": s.status} for s in select_series(session, definition, limit or None)]
    emit_rows(rows, json_out, lambda r: f"{r['orthanc_id']}  {r['modality'] or '-':<4} "
              f"{r['study_date'] or '-'}  {r['instances']:>4}  {r['manufacturer'] or '-':<20} "
              f"{r['description'] or ''}")


@app.command()
def fields(json_out: bool = JSON) -> None:
    """The fields a cohort can filter on, their operators and units."""
    from radflow.cohorts.definition import FIELDS, OPS

    if json_out:
        print_json({name: {"kind": spec.kind, "description": spec.description,
                           "operators": sorted(OPS[spec.kind])} for name, spec in FIELDS.items()})
        return
    for name, spec in FIELDS.items():
        console.print(f"{name:<20} {spec.kind:<7} {spec.description}  "
                      f"[dim]({', '.join(sorted(OPS[spec.kind]))})[/dim]", highlight=False)
    console.print('{"has_result": "SEG"}  series with a current derived result of that kind '
                  '(combine with {"not": ...})', highlight=False, markup=False)


@app.command()
def delete(name: str, site: str | None = SITE, json_out: bool = JSON) -> None:
    """Delete a saved cohort."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import delete_cohort

    with session_scope(site_catalog_url(site)) as session:
        delete_cohort(session, name)
    report(json_out, {"deleted": name}, f"deleted cohort {name}")
