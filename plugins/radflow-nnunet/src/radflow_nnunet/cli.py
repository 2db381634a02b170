"""``radflow model``: nnU-Net models. The nnU-Net plugin contributes this command group to the
``radflow`` command (entry point group ``radflow.cli``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from radflow.cli.common import JSON, SITE, console, print_json, report

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


@app.command()
def versions(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Model versions the hub offers (models trained by federated studies), each verified
    against the hub key this site pinned, with this site's approval."""
    from radflow.cli.common import site_context
    from radflow.federation.model_versions import offered_models

    rows = offered_models(site_context(site).paths.root)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("the hub offers no model versions")
    for r in rows:
        state = "approved" if r["approved"] else "not approved"
        console.print(f"[bold]{r['name']}[/bold] {r['version']} {r['hash']} ({r['signature']}, "
                      f"{state}) sites {r['federated'].get('sites', '-')}", highlight=False)


@app.command()
def approve(model_hash: str = typer.Argument(..., help="sha256:<hex> of the model version"),
            site: str | None = SITE, json_out: bool = JSON) -> None:
    """Approve a model version by its content hash (a data steward's decision, audited): one
    the hub offers and whose signature verifies (radflow model versions)."""
    import getpass

    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.errors import ConfigurationError
    from radflow.federation.model_versions import offered_models
    from radflow.federation.policy import load_policy, save_policy

    ctx = site_context(site)
    found = [r for r in offered_models(ctx.paths.root) if r["hash"] == model_hash]
    if not found or found[0]["signature"] != "verified":
        raise ConfigurationError(f"the hub offers no verified model version {model_hash}",
                                 fix="approve a hash that `radflow model versions` lists as "
                                     "verified")
    policy = load_policy(ctx.paths.root)
    approved = [h for h in policy.approved_models if h != model_hash] + [model_hash]
    save_policy(ctx.paths.root, policy.model_copy(update={"approved_models": approved}))
    record(ctx.catalog_url, actor=f"cli:{getpass.getuser()}", action="model.approved",
           subject=f"model:{model_hash}", detail={"site": ctx.name, "name": found[0]["name"],
                                                  "version": found[0]["version"]})
    report(json_out, {"hash": model_hash, "approved": True},
           f"{found[0]['name']} {found[0]['version']} approved at {ctx.name}")


@app.command("install-version")
def install_version(model_hash: str = typer.Argument(..., help="sha256:<hex> of an approved "
                                                                "model version"),
                    site: str | None = SITE, json_out: bool = JSON) -> None:
    """Install an approved model version from the hub: every file is checked against the
    signed manifest first. Running sites get its block on their next `radflow site up`."""
    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.federation.model_versions import install_version as install

    ctx = site_context(site)
    models = _models()
    path = install(ctx.paths.root, model_hash, models.models_home())
    info = next(m for m in models.list_models() if m.path == path)
    registered = _register(ctx, info)
    record(ctx.catalog_url, actor="cli", action="model.installed", subject=f"model:{model_hash}",
           detail={"site": ctx.name, "name": info.name, "version": info.version})
    report(json_out, {"hash": model_hash, "name": info.name, "version": info.version,
                      "path": str(path), "registered": registered},
           f"installed {info.name} {info.version} in {path}" + (
               "" if registered else "; the site's Prefect is not running: its next "
                                     "`radflow site up` registers the model"))


def _register(ctx, info) -> bool:
    """Save the model's block on the site's running Prefect (a newer version of a model
    replaces the older one's block at once); False when the server is not running."""
    from radflow.errors import PrefectUnavailable
    from radflow.site.registration import site_prefect
    from radflow_nnunet.block import NnUNetModel

    try:
        ctx.prefect(timeout=5).version()
    except PrefectUnavailable:
        return False
    with site_prefect(ctx):
        NnUNetModel(**info.block_fields()).save(info.name, overwrite=True)
    return True


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
