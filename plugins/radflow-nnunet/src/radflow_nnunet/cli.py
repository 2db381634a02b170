"""``radflow model``: nnU-Net models. The nnU-Net plugin contributes this command group to the
``radflow`` command (entry point group ``radflow.cli``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from radflow.cli.common import JSON, console, print_json, report

app = typer.Typer(help="nnU-Net models: install, list, train the demo model.", no_args_is_help=True)


def _models():
    from radflow_nnunet import models

    return models


@app.command("list")
def list_(json_out: bool = JSON) -> None:
    """Installed models (the built-in demo model and those from `radflow model install`)."""
    rows = [{"name": m.name, "version": m.version, "path": str(m.path), "builtin": m.builtin,
             "labels": {k: (v["value"] if isinstance(v, dict) else v)
                        for k, v in m.card["labels"].items()},
             "dice": m.card.get("evaluation", {}).get("dice")} for m in _models().list_models()]
    if json_out:
        print_json(rows)
        return
    for r in rows:
        kind = "built-in" if r["builtin"] else "installed"
        console.print(f"[bold]{r['name']}[/bold] {r['version']} ({kind}) {r['path']}", highlight=False)
        console.print(f"    labels {r['labels']}  Dice on held-out data {r['dice'] or '-'}",
                      highlight=False)


@app.command()
def install(zip_file: Path = typer.Argument(..., exists=True, help="nnU-Net model zip."),
            name: str = typer.Option(None, help="Name to install it under."),
            json_out: bool = JSON) -> None:
    """Install a model exported with `nnUNetv2_export_model_to_zip` (or `radflow model export`).
    Running sites get its block on their next `radflow site up`."""
    info = _models().install_zip(zip_file, name)
    report(json_out, {"name": info.name, "version": info.version, "path": str(info.path)},
           f"installed {info.name} {info.version} in {info.path}")


@app.command()
def export(name: str, out: Path = typer.Option(..., "--out", help="Zip file to write."),
           json_out: bool = JSON) -> None:
    """Write a model as an nnU-Net model zip."""
    models = _models()
    models.export_zip(models.get_model(name), out)
    report(json_out, {"name": name, "zip": str(out)}, f"wrote {out}")


@app.command("train-demo")
def train_demo(
    out: Path = typer.Option(None, "--out", help="Model folder (default: RADFLOW_HOME/models/"
                             "radflow-abdomen-demo)."),
    cases: int = typer.Option(20, help="Training phantoms."),
    epochs: int = typer.Option(40, help="Epochs of 30 iterations."),
    json_out: bool = JSON,
) -> None:
    """Train radflow's small nnU-Net demo model on synthetic phantoms (about 15 minutes on two
    CPU cores), with nnU-Net's own planning, preprocessing and training."""
    from radflow.settings import get_settings

    target = out or get_settings().home_dir / "models" / "radflow-abdomen-demo"
    argv = [sys.executable, "-m", "radflow_nnunet.training", "--out", str(target),
            "--cases", str(cases), "--epochs", str(epochs)]
    _models()
    if json_out:  # the trainer's progress goes to stderr; stdout holds only the JSON
        code = subprocess.call(argv, stdout=sys.stderr)
        print_json({"model_dir": str(target), "exit_code": code})
        raise typer.Exit(code)
    raise typer.Exit(subprocess.call(argv))
