"""The federation side of ``radflow site``: the site policy (what may leave), approvals of
flow versions, joining a hub, the versions it offers and the jobs it queued. Registered on
the ``site`` group by :func:`register`."""

from __future__ import annotations

from pathlib import Path

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
    if approve:
        _check_offered(ctx.paths.root, version_hash)
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


def _check_offered(site_root: Path, version_hash: str) -> None:
    """An approval names a version the hub offers, whose signature verifies against the pinned
    hub key (`radflow site versions`); an unknown hash is refused.

    Raises:
        ConfigurationError: the site has not joined a hub, the hub offers no such version, or
            its signature does not verify.
    """
    from radflow.errors import ConfigurationError
    from radflow.federation.client import federation_dir
    from radflow.federation.versions import offered

    if not (federation_dir(site_root) / "hub.json").exists():
        raise ConfigurationError(f"{version_hash} is not a version this site knows: it has not "
                                 "joined a hub", fix="`radflow site join HUB_URL --code CODE`, "
                                                     "then approve a hash that `radflow site "
                                                     "versions` lists")
    found = [r for r in offered(site_root) if r["hash"] == version_hash]
    if not found:
        raise ConfigurationError(f"the hub offers no version {version_hash}",
                                 fix="approve a hash that `radflow site versions` lists")
    if found[0]["signature"] != "verified":
        raise ConfigurationError(f"version {version_hash} is {found[0]['signature']} here",
                                 fix="approve only a version whose signature verifies against "
                                     "the pinned hub key (radflow site versions)")


@commands.command()
def approve(version_hash: str = typer.Argument(..., help="sha256:<hex> of the flow version"),
            site: str | None = SITE, json_out: bool = JSON) -> None:
    """Approve a flow version by its content hash (nothing is approved by default): a version
    the hub offers and whose signature verifies (radflow site versions)."""
    _approval(site, version_hash, True, json_out)


@commands.command()
def revoke(version_hash: str = typer.Argument(..., help="sha256:<hex> of the flow version"),
           site: str | None = SITE, json_out: bool = JSON) -> None:
    """Withdraw the approval of a flow version: its jobs are refused with not_approved."""
    _approval(site, version_hash, False, json_out)


@commands.command()
def join(hub_url: str = typer.Argument(..., help="The hub's URL, e.g. https://hub.example"),
         code: str = typer.Option(..., "--code", help="The one-time code from the hub's operator."),
         ca_bundle: Path | None = typer.Option(None, help="The CA certificate (PEM) that signed "
                                                         "the hub's TLS certificate, if private."),
         site: str | None = SITE, json_out: bool = JSON) -> None:
    """Enrol this site at a hub: make the site's key pair (the private key stays here, 0600),
    register its public key, and pin the hub's signing key. Compare both fingerprints with the
    hub's operator by another channel. A running site starts its agent (which takes the hub's
    jobs) at once; a stopped one starts it with its next `radflow site up`."""
    from radflow.cli.common import site_context
    from radflow.federation.client import join as join_hub

    ctx = site_context(site)
    info = join_hub(hub_url, ctx.name, code, ctx.paths.root, ca_bundle)
    agent = _start_agent(ctx.name)
    report(json_out, {**info, "agent": agent},
           f"{ctx.name} joined {info['url']}\n  this site's key  "
           f"{info['site_fingerprint']}\n  the hub's key    "
           f"{info['hub_fingerprint']}  (compare both by another channel)\n  " + (
               "agent: started (it takes the hub's jobs)" if agent == "started" else
               f"agent: not started, the site is not running (`radflow site up --site "
               f"{ctx.name}` starts it with its agent)"))


def _start_agent(name: str) -> str:
    """Start the agent of a site that just joined, when what it needs (the site's Prefect
    server and worker) runs: "started", else "site-not-running"."""
    from radflow.errors import SiteError
    from radflow.site import SiteManager
    from radflow.site.components import component

    manager = SiteManager()
    states = {c.name: c.state for c in manager.status(name).components}
    if any(states.get(needed) != "running" for needed in component("agent").depends_on):
        return "site-not-running"
    try:
        manager.restart(name, "agent")
    except SiteError as exc:
        raise SiteError(f"site {name!r} joined the hub, but its agent did not start: "
                        f"{exc.message}", fix=exc.fix) from exc
    return "started"


@commands.command()
def versions(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The flow versions the hub offers: publisher, hash, signature check against the pinned
    hub key, approval, release schema, and what changed since the last approved one."""
    from radflow.cli.common import emit_rows, site_context
    from radflow.federation.versions import offered

    rows = offered(site_context(site).paths.root)

    def line(r: dict) -> str:
        if r["signature"] == "unsupported_version":
            return (f"{r['name']} {r['hash']}  unsupported_version: this radflow cannot read "
                    "its manifest (upgrade radflow at the site)")
        changed = r["changed_since_approved"]
        since = "first of its name" if changed is None else (
            f"changed: {', '.join(changed)}" if changed else "unchanged")
        schema = r["release_schema"]
        fields = "; ".join(f"round {part['x-radflow-round']}: {', '.join(part['properties'])}"
                           for part in schema["oneOf"]) if "oneOf" in schema \
            else ", ".join(schema["properties"])
        return (f"{r['name']} {r['label']:<4} {r['hash']}  {r['signature']:<13} "
                f"{'APPROVED' if r['approved'] else 'not approved'}  by {r['publisher']}  "
                f"releases {fields}  ({since})")
    emit_rows(rows, json_out, line)


jobs_app = typer.Typer(help="Federated jobs the hub queued for this site.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The jobs the hub has queued for this site, with their flow version, approval and how
    far the agent got (``state``: received, running, pending_release, sending: decided and
    waiting in the outbox for the hub's acknowledgement)."""
    from radflow.cli.common import emit_rows, site_context
    from radflow.federation.client import HubClient
    from radflow.federation.policy import load_policy
    from radflow.federation.steward import job_row

    ctx = site_context(site)
    approved = set(load_policy(ctx.paths.root).approved)
    answer = HubClient(ctx.paths.root).get("/jobs", wait=0)
    rows = []
    for j in answer.json().get("jobs", []):
        row = job_row(ctx.catalog_url, j["id"])
        rows.append({"id": j["id"], "study": j["study"], "version": j["version"],
                     "approved": j["version"] in approved,
                     "accepted": row is not None and row.accepted_by is not None,
                     "state": row.state if row is not None else "queued",
                     "params": j["params"]})
    emit_rows(rows, json_out, lambda r: f"{r['id']}  study {r['study']}  {r['version'][:19]}  "
              f"{'approved' if r['approved'] else 'NOT approved'}  "
              f"{'accepted' if r['accepted'] else 'waiting for acceptance'}  {r['state']}")


@jobs_app.command("accept")
def jobs_accept(job_id: str = typer.Argument(..., help="The job's id (radflow site jobs list)."),
                site: str | None = SITE, json_out: bool = JSON) -> None:
    """Accept a queued job (job mode manual: a data steward accepts each one); the agent runs
    it on its next poll. Recorded in the site's audit log."""
    from radflow.cli.common import site_context
    from radflow.federation.steward import accept_job

    ctx = site_context(site)
    accept_job(ctx.catalog_url, job_id, f"cli:{_user()}")
    report(json_out, {"job": job_id, "accepted": True}, f"job {job_id}: accepted")


releases_app = typer.Typer(help="Releases waiting for a data steward (policy manual_release).",
                           no_args_is_help=True)


@releases_app.command("list")
def releases_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Releases that passed the egress gate and wait for a steward's approval."""
    from radflow.cli.common import emit_rows, site_context
    from radflow.federation.steward import pending_releases

    rows = pending_releases(site_context(site).catalog_url)
    emit_rows(rows, json_out, lambda r: f"{r['job']}  study {r['study']}  {r['version'][:19]}  "
              f"{r['hash'][:19]}  {'approved' if r['approved'] else 'waiting'}")


@releases_app.command("show")
def releases_show(job_id: str = typer.Argument(..., help="The job's id."),
                  site: str | None = SITE, json_out: bool = JSON) -> None:
    """Exactly the JSON that would leave the site, and its hash (approve names that hash)."""
    from radflow.cli.common import site_context
    from radflow.federation.steward import pending_release

    row = pending_release(site_context(site).catalog_url, job_id)
    if json_out:
        print_json(row)
        return
    console.print(f"job {row['job']}  study {row['study']}  version {row['version']}\n"
                  f"what would leave (sha256 {row['hash']}):", highlight=False)
    console.print_json(data=row["release"])
    if row["suppressed"]:
        console.print(f"suppressed by the gate: {', '.join(row['suppressed'])}", highlight=False)


@releases_app.command("approve")
def releases_approve(job_id: str = typer.Argument(..., help="The job's id."),
                     hash_: str = typer.Option(..., "--hash", help="The hash `show` printed: "
                                               "the approval covers exactly that JSON."),
                     site: str | None = SITE, json_out: bool = JSON) -> None:
    """Let exactly this release leave: the approval, its audit events and the post (an outbox
    entry) commit together; the agent posts it, and retries until the hub acknowledges."""
    from radflow.cli.common import site_context
    from radflow.federation.steward import decide_release

    ctx = site_context(site)
    decide_release(ctx.catalog_url, job_id, f"cli:{_user()}", approve=True,
                   expected_hash=hash_)
    report(json_out, {"job": job_id, "approved": True}, f"release of job {job_id}: approved")


@releases_app.command("decline")
def releases_decline(job_id: str = typer.Argument(..., help="The job's id."),
                     site: str | None = SITE, json_out: bool = JSON) -> None:
    """Keep this release at the site: the hub is told `declined` and nothing else (audited;
    posted through the outbox, like an approval)."""
    from radflow.cli.common import site_context
    from radflow.federation.steward import decide_release

    ctx = site_context(site)
    decide_release(ctx.catalog_url, job_id, f"cli:{_user()}", approve=False)
    report(json_out, {"job": job_id, "approved": False}, f"release of job {job_id}: declined")

def register(site_app: typer.Typer) -> None:
    """Add the federation commands and groups to ``radflow site``."""
    site_app.registered_commands.extend(commands.registered_commands)
    site_app.add_typer(policy_app, name="policy")
    site_app.add_typer(jobs_app, name="jobs")
    site_app.add_typer(releases_app, name="releases")
