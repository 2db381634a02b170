"""``radflow study schedule``: studies that run by themselves, as schedules of the hub's Prefect
deployment of their flow (:mod:`radflow.hub.schedules`), on this machine's hub or through
``--hub URL`` with a coordinator's token."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import JSON, console, report
from radflow.cli.study import HUB, _hub, app, parse_params
from radflow.errors import ConfigurationError


@app.command("schedule")
def schedule(
        target: str = typer.Argument(..., help="The flow to schedule (e.g. "
                                     "federated-cohort-count), or list, pause, resume, delete."),
        slug: str | None = typer.Argument(None, help="The schedule (radflow-...) to pause, "
                                          "resume or delete."),
        cron: str | None = typer.Option(None, help="When, as cron: '0 2 * * 1' is Mondays at "
                                        "02:00."),
        every: str | None = typer.Option(None, help="Or how often: 30m, 12h, 7d (at least 1m)."),
        timezone: str = typer.Option("UTC", help="The cron's time zone, e.g. Europe/Berlin."),
        cohort: Path | None = typer.Option(None, help="A cohort definition (JSON file)."),
        param: list[str] | None = typer.Option(None, "--param", help="A parameter KEY=VALUE; "
                                               "repeatable."),
        sites: list[str] | None = typer.Option(None, "--sites", help="Only these sites."),
        deadline: float = typer.Option(600, help="Seconds each run waits for the sites."),
        hub: str | None = HUB, json_out: bool = JSON) -> None:
    """Run a study by itself, on a schedule of the hub's Prefect deployment of the flow; each
    run is an ordinary study (radflow study list). Also: `schedule list`, `schedule pause|resume|
    delete SLUG`."""
    from radflow.cli.common import emit_rows
    from radflow.cohorts.definition import CohortDefinition

    if target in ("pause", "resume", "delete") and not slug:
        raise ConfigurationError(f"which schedule to {target}?",
                                 fix=f"radflow study schedule {target} SLUG (see schedule list)")
    if target not in ("pause", "resume", "delete", "list") and not (cron or every):
        raise ConfigurationError(f"when should {target} run?",
                                 fix="--cron '0 2 * * 1' (Mondays at 02:00) or --every 7d")
    target_hub = _hub(hub)
    if target in ("pause", "resume", "delete"):
        row = target_hub.schedules(target, slug=slug)
        report(json_out, row, f"schedule {slug}: "
               + {"pause": "paused", "resume": "active", "delete": "deleted"}[target])
        return
    if target == "list":
        rows = target_hub.schedules("list")
        if not rows and not json_out:
            console.print("no schedule yet: radflow study schedule NAME --cron '0 2 * * 1' "
                          "--cohort FILE", highlight=False)
        emit_rows(rows, json_out, lambda r: f"{r['slug']}  {r['flow']:<28} "
                  f"{r['cron'] or _every(r['every_s'])} {r['timezone'] or ''}  "
                  f"{'active' if r['active'] else 'paused'}  next {r['next_run'] or '-'}  "
                  f"last {', '.join(s['study'] for s in r['last_studies']) or '-'}")
        return
    params: dict = parse_params(param)
    if cohort is not None:
        params["cohort"] = CohortDefinition.parse(cohort.read_text()).canonical()
    made = target_hub.schedules("create", name=target, cron=cron,
                                every=_seconds(every) if every else None, timezone=timezone,
                                params=params, sites=sites or None, deadline_s=deadline)
    report(json_out, made, f"schedule {made['slug']}: {target} "
           f"{made['cron'] or _every(made['every_s'])} ({made['timezone']}), next run "
           f"{made['next_run'] or 'being scheduled'}")


def _seconds(text: str) -> float:
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise ConfigurationError(f"--every {text!r} is not a duration",
                                 fix="e.g. --every 30m, 12h or 7d") from None


def _every(seconds: float | None) -> str:
    if not seconds:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"every {int(seconds // size)}{unit}"
    return f"every {seconds:g}s"
