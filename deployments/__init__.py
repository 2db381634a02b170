"""The deployments every site gets, applied to the site's Prefect server by ``radflow site up``.

Flows are referenced by module path (``radflow.flows.ingest.ingest``): the worker imports them
from the installed radflow, so a deployment needs no source folder and no image. Scale-out work
pools (docker, kubernetes) take the same definitions with an image in ``job_variables``.

Example:
    ```python
    from radflow.deployments import SITE_DEPLOYMENTS
    print([d.name for d in SITE_DEPLOYMENTS])
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radflow.site.components import SiteContext


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of a radflow flow on a site.

    Attributes:
        flow: module path of the flow object.
        description: shown in the Prefect UI.
        parameters: default parameters (the site name is filled in at apply time).
        concurrency_limit: how many runs of it at once on the site.
        tags: Prefect tags.
    """

    flow: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ("radflow",)

    @property
    def flow_name(self) -> str:
        from prefect.utilities.importtools import import_object

        return import_object(self.flow).name


SITE_DEPLOYMENTS: list[DeploymentSpec] = [
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
        description="nnU-Net segmentation (DICOM SEG) and pyradiomics features (DICOM SR "
        "TID 1500) over a cohort or a list of series.",
        tags=("radflow", "segmentation", "radiomics"),
    ),
]


def deployment_name(spec: DeploymentSpec, site: str) -> str:
    """``<flow name>/<site>``, e.g. ``ingest/lab``."""
    return f"{spec.flow_name}/{site}"


def apply_site_deployments(ctx: SiteContext) -> list[str]:
    """Create or update the site's deployments (idempotent); returns their full names."""
    from prefect.types.entrypoint import EntrypointType
    from prefect.utilities.importtools import import_object

    from radflow.site.registration import site_prefect

    names = []
    with site_prefect(ctx):
        for spec in SITE_DEPLOYMENTS:
            flow = import_object(spec.flow)
            deployment = flow.to_deployment(
                name=ctx.config.name,
                entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name=ctx.config.work_pool,
                parameters={**spec.parameters, "site": ctx.config.name},
                description=spec.description,
                tags=list(spec.tags),
                concurrency_limit=spec.concurrency_limit,
            )
            deployment.apply(work_pool_name=ctx.config.work_pool)
            names.append(deployment_name(spec, ctx.config.name))
    return names
