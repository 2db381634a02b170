"""Shared bits of the CLI: consoles, the options every command takes, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from radflow.site.context import SiteContext

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SITE = typer.Option(None, "--site", "-s", envvar="RADFLOW_SITE",
                    help="Site name (default: the only site under RADFLOW_HOME).")
JSON = typer.Option(False, "--json", help="Machine-readable output: JSON on stdout, nothing else.")


def print_json(data: Any) -> None:
    """Machine output for ``--json``: plain JSON on stdout, nothing else."""
    print(json.dumps(data, indent=2, default=str))


def report(json_out: bool, data: Any, text: str) -> None:
    """The result of a command: ``data`` as JSON (``--json``), else one line of text."""
    if json_out:
        print_json(data)
    else:
        console.print(text, highlight=False)


def emit_rows(rows: list[dict[str, Any]], json_out: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """Rows as JSON (``--json``) or one formatted line each."""
    if json_out:
        print_json(rows)
        return
    for row in rows:
        console.print(line(row), highlight=False)


def site_context(site: str | None) -> SiteContext:
    """The handle of the site a command is for (``--site``, else the only site)."""
    from radflow.site import SiteManager

    manager = SiteManager()
    return manager.context(manager.resolve(site))


def site_catalog_url(site: str | None) -> str:
    """The catalog URL of a site under RADFLOW_HOME."""
    return site_context(site).catalog_url
