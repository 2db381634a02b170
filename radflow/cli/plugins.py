"""``radflow plugins``: what is installed, what it offers, what is broken."""

from __future__ import annotations

from typing import Any

import typer

from radflow.cli.common import JSON, console, print_json
from radflow.errors import RadflowError
from radflow.plugins.registry import PluginStatus, discover

app = typer.Typer(help="Installed radflow plugins.", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = JSON) -> None:
    """Name, version, tasks (typed inputs and outputs, resources) and blocks of every plugin;
    broken plugins with their error."""
    rows = [_row(status) for status in discover()]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no plugins installed (entry point group radflow.plugins)")
    for row in rows:
        if row["status"] == "broken":
            console.print(f"[red]{row['name']}[/red] ({row['distribution']} {row['version']}) "
                          f"BROKEN: {row['error']}", highlight=False)
            continue
        console.print(f"[bold]{row['name']}[/bold] ({row['distribution']} {row['version']}): "
                      f"{row['description']}", highlight=False)
        for t in row["tasks"]:
            r = t["resources"]
            console.print(f"    task {t['signature']}  [dim]cpus {r['cpus']}, memory "
                          f"{r['memory_gb']} GB, gpu {r['gpu']}[/dim]", highlight=False)
        for key in ("steps", "blocks", "deployments", "components"):
            if row[key]:
                console.print(f"    {key}: {', '.join(row[key])}", highlight=False)


def _row(status: PluginStatus) -> dict[str, Any]:
    """One plugin as listed; broken when it did not load, or when what it names (its tasks,
    blocks, steps) cannot be imported."""
    plugin, error = status.plugin, status.error
    row = {"name": status.name, "distribution": status.distribution, "version": status.version,
           "status": "broken", "error": error, "description": None, "tasks": [], "blocks": [],
           "steps": [], "deployments": [], "components": [], "image": None}
    if plugin is None:
        return row
    try:
        row.update({
            "tasks": [{"name": t.name, "signature": t.signature(), "description": t.description,
                       "resources": vars(t.resources)} for t in plugin.tasks],
            "blocks": [b.get_block_type_slug() for b in plugin.blocks],
            "steps": sorted(name for name, _step in plugin.steps.items()),  # named: imported
        })
    except RadflowError as exc:
        row["error"] = exc.message
        return row
    row.update({"status": "ok", "description": plugin.description,
                "deployments": [d.flow for d in plugin.deployments],
                "components": [c.name for c in plugin.components], "image": plugin.image})
    return row
