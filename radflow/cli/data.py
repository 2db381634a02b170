"""``radflow data``: synthesize sample CT studies and push DICOM to a site."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from radflow.cli.common import JSON, SITE, console, print_json, site_context

app = typer.Typer(help="Sample data and DICOM transfer.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


@app.command()
def synth(
    cases: int = typer.Option(5, "--cases", min=1, help="How many CT studies."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same data (pixels and UIDs)."),
    matrix: int = typer.Option(128, "--matrix", min=16, max=1024,
                               help="Rows/columns per slice (512 is clinical size)."),
    ground_truth_seg: bool = typer.Option(
        False, "--ground-truth-seg", help="Also write each case's ground truth as a DICOM SEG "
        "(case_NNN/ground-truth/SEG.dcm; `radflow data import-labels` records it as accepted)."),
    site_profile: str | None = typer.Option(
        None, "--site-profile", help="A synthetic hospital (a, b or c: its own vendor, contrast "
        "phase, noise, slice thickness and anatomy; see radflow.synth.sites) instead of the "
        "mixed set."),
    json_out: bool = JSON,
) -> None:
    """Write synthetic abdominal CT studies with ground-truth organ labels."""
    from radflow.synth import get_site_profile, synthesize

    profile = get_site_profile(site_profile)  # an unknown name fails before any work
    if json_out:
        written = synthesize(out, cases, seed=seed, matrix=matrix, seg=ground_truth_seg,
                             site_profile=profile)
        print_json([c.__dict__ for c in written])
        return
    with _progress() as bar:
        task = bar.add_task("synthesizing", total=cases)
        written = synthesize(out, cases, seed=seed, matrix=matrix, seg=ground_truth_seg,
                             site_profile=profile, progress=lambda _c: bar.advance(task))
    slices = sum(c.slices for c in written)
    console.print(f"wrote {len(written)} CT studies ({slices} slices) and labels to {out}")


@app.command()
def push(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (walked recursively)."),
    site: str | None = SITE,
    json_out: bool = JSON,
) -> None:
    """Send DICOM files to a site's Orthanc over C-STORE (DCMTK storescu) and verify. The
    series sent are cataloged at once: the site does not wait for Orthanc to call them stable
    (no new instance for its stable age), as it does for what other senders store."""
    from radflow.catalog.sync import request_now
    from radflow.data.push import push as do_push

    ctx = site_context(site)
    client = ctx.orthanc_client()
    kwargs = dict(client=client, host="127.0.0.1", port=ctx.config.ports.orthanc_dicom,
                  called_aet=ctx.config.aet, dcmtk_bin=ctx.settings.dcmtk_bin)
    if json_out:
        result = do_push(paths, **kwargs)
    else:
        with console.status("sending over DICOM C-STORE..."):
            result = do_push(paths, **kwargs)
    requested, not_requested = 0, None
    if result.verified:
        from sqlalchemy.exc import SQLAlchemyError

        from radflow.errors import RadflowError

        try:
            requested = request_now(client, ctx.catalog_url, result.orthanc_series)
        except (RadflowError, SQLAlchemyError) as exc:  # the push stands; the watcher catalogs
            not_requested = str(exc).splitlines()[0]
    if json_out:
        print_json({**result.__dict__, "studies": sorted(result.studies), "rate": result.rate,
                    "catalog_requested": requested, "catalog_not_requested": not_requested})
    else:
        console.print(f"sent {result.sent}/{result.files} instances of {len(result.studies)} "
                      f"studies to {ctx.config.aet} in {result.seconds:.1f} s "
                      f"({result.rate:.0f} instances/s); "
                      f"Orthanc holds them all: {'yes' if result.verified else 'NO'}")
        if requested:
            console.print(f"cataloging {requested} series now (`radflow catalog wait` waits "
                          "for it)", highlight=False)
        if not_requested:
            console.print(f"[yellow]could not ask for the series to be cataloged now "
                          f"({not_requested}); the watcher catalogs them once Orthanc calls them "
                          "stable[/yellow]", highlight=False)
        if result.skipped:
            console.print(f"skipped {len(result.skipped)} non-DICOM file(s)")
        for line in result.failed[:10]:
            console.print(f"[red]{line}[/red]")
    if result.failed or not result.verified:
        raise typer.Exit(1)


@app.command("import-labels")
def import_labels(
    paths: list[Path] = typer.Argument(..., help="DICOM SEG files or folders (walked "
                                                 "recursively; other DICOM files are skipped)."),
    site: str | None = SITE,
    json_out: bool = JSON,
) -> None:
    """Record hand-drawn DICOM SEGs (ground truth) as accepted labels of their image series:
    each is stored in the site's Orthanc and recorded with the reason "imported ground truth"
    and you as the one who accepted it (audit log: labels.imported). Push the image series
    first. Importing again changes nothing."""
    import getpass

    from radflow.data.labels import import_labels as do_import

    ctx = site_context(site)
    result = do_import(paths, client=ctx.orthanc_client(), catalog_url=ctx.catalog_url,
                       by=f"cli:{getpass.getuser()}")
    if json_out:
        print_json({"imported": [i.__dict__ for i in result.imported], "failed": result.failed,
                    "not_seg": result.not_seg})
    else:
        new = sum(i.new for i in result.imported)
        console.print(f"{len(result.imported)} label SEG(s) accepted ({new} new, "
                      f"{len(result.imported) - new} imported before); "
                      f"{result.not_seg} other DICOM file(s) skipped", highlight=False)
        for line in result.failed[:10]:
            console.print(f"[red]{line}[/red]", highlight=False)
        if not result.imported and not result.failed:
            console.print("no DICOM SEG among the paths; fix: give SEG files or folders "
                          "(`radflow data synth --ground-truth-seg` writes them)", highlight=False)
    if result.failed or not result.imported:
        raise typer.Exit(1)
