"""The ``radflow`` command: one command group per module.

Errors derived from :class:`radflow.errors.RadflowError` end the command with exit status 1
and a short reason plus the fix, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from radflow import __version__
from radflow.cli.catalog import app as catalog_app
from radflow.cli.cohort import app as cohort_app
from radflow.cli.common import err_console
from radflow.cli.data import app as data_app
from radflow.cli.model import app as model_app
from radflow.cli.pipeline import app as pipeline_app
from radflow.cli.plugins import app as plugins_app
from radflow.cli.site import app as site_app
from radflow.errors import RadflowError

app = typer.Typer(
    name="radflow",
    help="Federated medical-image analysis: Orthanc + Prefect at every site.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(site_app, name="site")
app.add_typer(data_app, name="data")
app.add_typer(catalog_app, name="catalog")
app.add_typer(cohort_app, name="cohort")
app.add_typer(plugins_app, name="plugins")
app.add_typer(model_app, name="model")
app.add_typer(pipeline_app, name="pipeline")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """radflow: ship the algorithms to the data."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except RadflowError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False)
        if exc.fix:
            err_console.print(f"[bold]fix:[/bold] {exc.fix}", highlight=False)
        sys.exit(1)
