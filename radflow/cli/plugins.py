"""``radflow plugins``: what is installed, what it offers, what is broken."""

from __future__ import annotations

import typer

from radflow.cli.common import JSON, console, print_json

app = typer.Typer(help="Installed radflow plugins.", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = JSON) -> None:
    """Name, version, tasks (typed inputs and outputs, resources) and blocks of every plugin;
    broken plugins with their error."""
    from radflow.plugins import discover

    rows = []
    for status in discover():
        plugin = status.plugin
        rows.append({
            "name": status.name, "distribution": status.distribution, "version": status.version,
            "status": "ok" if plugin else "broken", "error": status.error,
            "description": plugin.description if plugin else None,
            "tasks": [{"name": t.name, "signature": t.signature(), "description": t.description,
                       "resources": vars(t.resources)} for t in plugin.tasks] if plugin else [],
            "blocks": [b.get_block_type_slug() for b in plugin.blocks] if plugin else [],
            "steps": sorted(plugin.steps) if plugin else [],
            "deployments": [d.flow for d in plugin.deployments] if plugin else [],
            "components": [c.name for c in plugin.components] if plugin else [],
            "image": plugin.image if plugin else None,
        })
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
