"""The deployments every site gets, applied to the site's Prefect server by ``radflow site up``.

Which flows a site deploys is whatever the installed plugins declare (``Plugin.deployments``);
radflow's own flows are declared by its ``core`` plugin (:data:`CORE_DEPLOYMENTS`), exactly as a
third-party plugin declares its own. Flows are referenced by module path
(``radflow.flows.ingest.ingest``): the worker imports them from the installed package, so a
deployment needs no source folder and no image.

Example:
    ```python
    from radflow.plugins import site_deployments
    print([d.flow_name for d in site_deployments()])
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radflow.plugins.spec import DeploymentSpec

if TYPE_CHECKING:
    from radflow.site.context import SiteContext

CORE_DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        flow="radflow.flows.ingest.ingest",
        description="Catalog series that Orthanc reported stable (started by the change "
        "watcher; works through the site's ingest queue until idle).",
        # no Prefect concurrency limit: runs over a limit are re-scheduled ~30 s later; the
        # watcher itself keeps one queue-mode run live at a time
        tags=("radflow", "ingest"),
    ),
    DeploymentSpec(
        flow="radflow.flows.segment_quantify.segment_and_quantify",
        description="Segmentation (DICOM SEG) and radiomics (DICOM SR TID 1500) over a cohort: "
        "pins the cohort, then one case flow per series under a concurrency limit.",
        tags=("radflow", "segmentation", "radiomics"),
    ),
    DeploymentSpec(
        flow="radflow.flows.federated_job.federated_job",
        description="The site part of an approved, verified federated flow version (started "
                    "by the site agent).",
        tags=("radflow", "federation"),
    ),
    DeploymentSpec(
        flow="radflow.flows.export.export_cohort",
        description="A de-identified export filed on the site web app, once a data steward "
                    "approved it (radflow export show ID).",
        tags=("radflow", "export"),
    ),
    DeploymentSpec(
        flow="radflow.flows.segment_quantify.segment_and_quantify_case",
        description="Segmentation and radiomics of one series (the unit of work and of review).",
        tags=("radflow", "segmentation", "radiomics", "case"),
    ),
)


def apply_site_deployments(ctx: SiteContext) -> list[str]:
    """Create or update the deployments of every installed plugin on the site (idempotent);
    returns their full names."""
    from prefect.types.entrypoint import EntrypointType
    from prefect.utilities.importtools import import_object

    from radflow.plugins import deployment_name, site_deployments
    from radflow.site.registration import site_prefect
    from radflow.site.workpools import site_job_variables

    names = []
    specs = site_deployments()
    variables = site_job_variables(ctx.config.work_pool_type, ctx.config.image_registry,
                                   site=ctx.config.name, home=str(ctx.settings.home))
    if ctx.config.work_pool_type == "process":  # started by the worker's fork server
        from radflow.forkserver import warm_command

        warm = {"command": warm_command(ctx.paths.warm_socket)}
        variables = {spec.flow: {**variables.get(spec.flow, {}), **warm} for spec in specs}
    with site_prefect(ctx):
        for spec in specs:
            flow = import_object(spec.flow)
            deployment = flow.to_deployment(
                name=ctx.config.name,
                entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name=ctx.config.work_pool,
                parameters={**spec.parameters, "site": ctx.config.name},
                description=spec.description,
                tags=list(spec.tags),
                concurrency_limit=spec.concurrency_limit,
                job_variables=variables.get(spec.flow) or None,
            )
            deployment.apply(work_pool_name=ctx.config.work_pool)
            names.append(deployment_name(flow.name, ctx.config.name))
    return names
