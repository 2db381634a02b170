"""The ``radflow`` command: one command group per module, and the groups plugins contribute
(entry point group ``radflow.cli``: ``name = "module:typer_app"``).

Every failure ends the command with exit status 1 and one line with the reason and one with the
fix, never a traceback (``RADFLOW_DEBUG=1`` shows it): radflow's own errors, usage errors, and
anything unexpected.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

import typer

from radflow import __version__
from radflow.cli import study_schedule  # noqa: F401  (registers `study schedule`)
from radflow.cli.catalog import app as catalog_app
from radflow.cli.cohort import app as cohort_app
from radflow.cli.common import err_console
from radflow.cli.data import app as data_app
from radflow.cli.discover import discover, hub_access_app, site_access_app
from radflow.cli.export import app as export_app
from radflow.cli.hub import app as hub_app
from radflow.cli.hub import publish
from radflow.cli.offline import hub_job_app, hub_key, hub_release_app, join_offline, site_job_app
from radflow.cli.pipeline import app as pipeline_app
from radflow.cli.plugins import app as plugins_app
from radflow.cli.results import app as results_app
from radflow.cli.sessions import hub_app as hub_sessions_app
from radflow.cli.sessions import site_app as site_sessions_app
from radflow.cli.site import app as site_app
from radflow.cli.site_federation import register as register_site_federation
from radflow.cli.study import app as study_app
from radflow.cli.worklist import app as worklist_app
from radflow.errors import RadflowError

try:  # typer vendors click (typer._click) since 0.2x; older typers use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError

CLI_GROUP = "radflow.cli"
logger = logging.getLogger(__name__)

app = typer.Typer(
    name="radflow",
    help="Federated medical-image analysis: Orthanc + Prefect at every site.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
register_site_federation(site_app)
site_app.add_typer(site_sessions_app, name="sessions")
hub_app.add_typer(hub_sessions_app, name="sessions")
hub_app.add_typer(hub_access_app, name="access")
hub_app.add_typer(hub_job_app, name="job")
hub_app.add_typer(hub_release_app, name="release")
site_app.add_typer(site_job_app, name="job")
site_app.command("join-offline")(join_offline)
hub_app.command("key")(hub_key)
site_app.add_typer(site_access_app, name="access")
app.add_typer(site_app, name="site")
app.add_typer(data_app, name="data")
app.add_typer(catalog_app, name="catalog")
app.add_typer(cohort_app, name="cohort")
app.add_typer(plugins_app, name="plugins")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(results_app, name="results")
app.add_typer(worklist_app, name="worklist")
app.add_typer(hub_app, name="hub")
app.command("publish")(publish)
app.command("discover")(discover)
app.add_typer(study_app, name="study")
app.add_typer(export_app, name="export")


def _plugin_groups() -> None:
    """Add the command groups plugins contribute; a broken one is skipped with a warning."""
    for ep in sorted(entry_points(group=CLI_GROUP), key=lambda e: e.name):
        try:
            group = ep.load()
            if not isinstance(group, typer.Typer):
                raise TypeError(f"{ep.value} is a {type(group).__name__}, not a typer.Typer")
            app.add_typer(group, name=ep.name)
        except Exception as exc:  # noqa: BLE001 (a broken plugin never breaks the command)
            logger.warning("command group %s (%s) could not be loaded: %s", ep.name, ep.value, exc)


_plugin_groups()


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


def fail(message: str, fix: str | None) -> None:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True)
    if fix:
        err_console.print(f"[bold]fix:[/bold] {fix}", highlight=False)
    sys.exit(1)


def main() -> None:
    """Console-script entry point."""
    from radflow.service import restore_sigint

    restore_sigint()  # `radflow site up &` in a script: what it starts must stop on SIGINT
    try:
        code = app(standalone_mode=False)
    except RadflowError as exc:
        fail(exc.message.replace("[", "\\["), exc.fix)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "radflow"
        fail(exc.format_message().replace("[", "\\["), f"see `{command} --help`")
    except ClickException as exc:
        fail(exc.format_message().replace("[", "\\["), "see `radflow --help`")
    except typer.Abort:
        fail("aborted", None)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("RADFLOW_DEBUG"):
            raise
        first = str(exc).split("\n")[0][:300].replace("[", "\\[")
        fail(f"unexpected {type(exc).__name__}: {first}",
             "run again with RADFLOW_DEBUG=1 for the traceback, and report it")
    sys.exit(code or 0)
