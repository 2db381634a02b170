"""The federation side of ``radflow site``: the site policy (what may leave), approvals of
flow versions, joining a hub, the versions it offers and the jobs it queued. Registered on
the ``site`` group by :func:`register`."""

from __future__ import annotations

import typer

from radflow.cli.common import JSON, SITE, console, print_json, report

# the plain commands, copied onto the site group by register()
commands = typer.Typer()


policy_app = typer.Typer(help="The site's policy: what may leave the site (policy.yaml).",
                         no_args_is_help=True)


@policy_app.command("show")
def policy_show(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Every policy setting with its value, default and meaning."""
    from radflow.cli.common import site_context
    from radflow.federation.policy import SitePolicy, load_policy, policy_path

    ctx = site_context(site)
    policy = load_policy(ctx.paths.root)
    if json_out:
        print_json(policy.model_dump(mode="json"))
        return
    console.print(f"site policy of {ctx.name} ({policy_path(ctx.paths.root)})", highlight=False)
    for name, field in SitePolicy.model_fields.items():
        value = getattr(policy, name)
        console.print(f"  {name:<21} {value!s:<10} {field.description} "
                      f"(default {field.get_default(call_default_factory=True)!s})",
                      highlight=False, soft_wrap=True)


@policy_app.command("set")
def policy_set(assignments: list[str] = typer.Argument(..., help="KEY=VALUE, e.g. min_cohort=20"),
               site: str | None = SITE, json_out: bool = JSON) -> None:
    """Change policy settings (each change goes into the site's audit log)."""
    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.federation.policy import load_policy, save_policy, set_values

    ctx = site_context(site)
    before = load_policy(ctx.paths.root)
    after = set_values(before, assignments)
    path = save_policy(ctx.paths.root, after)
    changed = {k: v for k, v in after.model_dump(mode="json").items()
               if before.model_dump(mode="json")[k] != v}
    record(ctx.catalog_url, actor=f"cli:{_user()}", action="policy.set",
           subject=f"site:{ctx.name}", detail=changed)
    report(json_out, {"changed": changed, "file": str(path)},
           f"policy of {ctx.name}: {changed or 'unchanged'} ({path})")


def _user() -> str:
    import getpass

    return getpass.getuser()


def _approval(site: str | None, version_hash: str, approve: bool, json_out: bool) -> None:
    import re

    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.errors import ConfigurationError
    from radflow.federation.policy import load_policy, save_policy

    if not re.fullmatch(r"sha256:[0-9a-f]{64}", version_hash):
        raise ConfigurationError(f"{version_hash!r} is not a flow version hash",
                                 fix="pass the full sha256:<64 hex> hash of the version")
    ctx = site_context(site)
    policy = load_policy(ctx.paths.root)
    approved = [h for h in policy.approved if h != version_hash]
    if approve:
        approved.append(version_hash)
    save_policy(ctx.paths.root, policy.model_copy(update={"approved": approved}))
    action = "version.approved" if approve else "version.revoked"
    record(ctx.catalog_url, actor=f"cli:{_user()}", action=action,
           subject=f"version:{version_hash}", detail={"site": ctx.name})
    report(json_out, {"hash": version_hash, "approved": approve},
           f"{version_hash}: {'approved' if approve else 'no longer approved'} at {ctx.name}")


@commands.command()
def approve(version_hash: str = typer.Argument(..., help="sha256:<hex> of the flow version"),
            site: str | None = SITE, json_out: bool = JSON) -> None:
    """Approve a flow version by its content hash (nothing is approved by default)."""
    _approval(site, version_hash, True, json_out)


@commands.command()
def revoke(version_hash: str = typer.Argument(..., help="sha256:<hex> of the flow version"),
           site: str | None = SITE, json_out: bool = JSON) -> None:
    """Withdraw the approval of a flow version: its jobs are refused with not_approved."""
    _approval(site, version_hash, False, json_out)


@commands.command()
def join(hub_url: str = typer.Argument(..., help="The hub's URL, e.g. https://hub.example"),
         code: str = typer.Option(..., "--code", help="The one-time code from the hub's operator."),
         site: str | None = SITE, json_out: bool = JSON) -> None:
    """Enrol this site at a hub: make the site's key pair (the private key stays here, 0600),
    register its public key, and pin the hub's signing key. Compare both fingerprints with the
    hub's operator by another channel."""
    from radflow.cli.common import site_context
    from radflow.federation.client import join as join_hub

    ctx = site_context(site)
    info = join_hub(hub_url, ctx.name, code, ctx.paths.root)
    report(json_out, info, f"{ctx.name} joined {info['url']}\n  this site's key  "
                           f"{info['site_fingerprint']}\n  the hub's key    "
                           f"{info['hub_fingerprint']}  (compare both by another channel)")


@commands.command()
def versions(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The flow versions the hub offers: publisher, hash, signature check against the pinned
    hub key, approval, release schema, and what changed since the last approved one."""
    from radflow.cli.common import emit_rows, site_context
    from radflow.federation.versions import offered

    rows = offered(site_context(site).paths.root)

    def line(r: dict) -> str:
        changed = r["changed_since_approved"]
        since = "first of its name" if changed is None else (
            f"changed: {', '.join(changed)}" if changed else "unchanged")
        fields = ", ".join(r["release_schema"]["properties"])
        return (f"{r['name']} {r['label']:<4} {r['hash']}  {r['signature']:<13} "
                f"{'APPROVED' if r['approved'] else 'not approved'}  by {r['publisher']}  "
                f"releases {fields}  ({since})")
    emit_rows(rows, json_out, line)


jobs_app = typer.Typer(help="Federated jobs the hub queued for this site.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The jobs the hub has queued for this site, with their flow version and approval."""
    from radflow.cli.common import emit_rows, site_context
    from radflow.federation.agent import accepted_file
    from radflow.federation.client import HubClient
    from radflow.federation.policy import load_policy

    ctx = site_context(site)
    approved = set(load_policy(ctx.paths.root).approved)
    answer = HubClient(ctx.paths.root).get("/jobs", wait=0)
    rows = [{"id": j["id"], "study": j["study"], "version": j["version"],
             "approved": j["version"] in approved,
             "accepted": accepted_file(ctx.paths.root, j["id"]).exists(),
             "params": j["params"]} for j in answer.json().get("jobs", [])]
    emit_rows(rows, json_out, lambda r: f"{r['id']}  study {r['study']}  {r['version'][:19]}  "
              f"{'approved' if r['approved'] else 'NOT approved'}  "
              f"{'accepted' if r['accepted'] else 'waiting for acceptance'}")


@jobs_app.command("accept")
def jobs_accept(job_id: str = typer.Argument(..., help="The job's id (radflow site jobs list)."),
                site: str | None = SITE, json_out: bool = JSON) -> None:
    """Accept a queued job (job mode manual: a data steward accepts each one); the agent runs
    it on its next poll. Recorded in the site's audit log."""
    import re

    from radflow.audit import record
    from radflow.cli.common import site_context
    from radflow.errors import ConfigurationError
    from radflow.federation.agent import accepted_file

    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise ConfigurationError(f"{job_id!r} is not a job id", fix="see radflow site jobs list")
    ctx = site_context(site)
    path = accepted_file(ctx.paths.root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"accepted by {_user()}\n")
    record(ctx.catalog_url, actor=f"cli:{_user()}", action="federation.job_accepted",
           subject=f"job:{job_id}", detail={})
    report(json_out, {"job": job_id, "accepted": True}, f"job {job_id}: accepted")


def register(site_app: typer.Typer) -> None:
    """Add the federation commands and groups to ``radflow site``."""
    site_app.registered_commands.extend(commands.registered_commands)
    site_app.add_typer(policy_app, name="policy")
    site_app.add_typer(jobs_app, name="jobs")
