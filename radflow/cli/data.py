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
    json_out: bool = JSON,
) -> None:
    """Write synthetic abdominal CT studies with ground-truth organ labels."""
    from radflow.synth import synthesize

    if json_out:
        written = synthesize(out, cases, seed=seed, matrix=matrix)
        print_json([c.__dict__ for c in written])
        return
    with _progress() as bar:
        task = bar.add_task("synthesizing", total=cases)
        written = synthesize(out, cases, seed=seed, matrix=matrix,
                             progress=lambda _c: bar.advance(task))
    slices = sum(c.slices for c in written)
    console.print(f"wrote {len(written)} CT studies ({slices} slices) and labels to {out}")


@app.command()
def push(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (walked recursively)."),
    site: str | None = SITE,
    json_out: bool = JSON,
) -> None:
    """Send DICOM files to a site's Orthanc over C-STORE (DCMTK storescu) and verify."""
    from radflow.data.push import push as do_push

    ctx = site_context(site)
    kwargs = dict(client=ctx.orthanc_client(), host="127.0.0.1", port=ctx.config.ports.orthanc_dicom,
                  called_aet=ctx.config.aet, dcmtk_bin=ctx.settings.dcmtk_bin)
    if json_out:
        result = do_push(paths, **kwargs)
        print_json({**result.__dict__, "studies": sorted(result.studies), "rate": result.rate})
    else:
        with console.status("sending over DICOM C-STORE..."):
            result = do_push(paths, **kwargs)
        console.print(f"sent {result.sent}/{result.files} instances of {len(result.studies)} "
                      f"studies to {ctx.config.aet} in {result.seconds:.1f} s "
                      f"({result.rate:.0f} instances/s); "
                      f"Orthanc holds them all: {'yes' if result.verified else 'NO'}")
        if result.skipped:
            console.print(f"skipped {len(result.skipped)} non-DICOM file(s)")
        for line in result.failed[:10]:
            console.print(f"[red]{line}[/red]")
    if result.failed or not result.verified:
        raise typer.Exit(1)
