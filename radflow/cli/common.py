"""Shared bits of the CLI: consoles and JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Console

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine output for ``--json``: plain JSON on stdout, nothing else."""
    print(json.dumps(data, indent=2, default=str))


def emit_rows(rows: list[dict[str, Any]], json_out: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """Rows as JSON (``--json``) or one formatted line each."""
    if json_out:
        print_json(rows)
        return
    for row in rows:
        console.print(line(row), highlight=False)


def site_catalog_url(site: str) -> str:
    """The catalog URL of a site under RADFLOW_HOME."""
    from radflow.site import SiteManager

    return SiteManager().context(site).catalog_url
