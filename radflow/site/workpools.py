"""A site's work pool: ``process`` (the default: flow runs are subprocesses of the site's worker),
``docker`` (prefect-docker: a container per flow run) or ``kubernetes`` (prefect-kubernetes: a
Job per flow run).

For the container pools, radflow derives what Prefect needs from what plugins declare:

* the pool's **base job template** is the pool type's own (``DockerWorker`` /
  ``KubernetesWorker``), with a ``gpu_limit`` variable added on Kubernetes
  (``nvidia.com/gpu`` in the container's limits);
* each deployment's **job variables** come from the plugins its flow runs: the image that holds
  them (``Plugin.image``, or the site image that stacks every plugin for the core pipeline
  flows, which dispatch to any plugin's tasks) and the largest ``Resources`` of their tasks (CPU,
  memory, GPU request). A task that needs a GPU (``gpu="required"``) asks for one; ``optional``
  asks for none (it runs on CPU, faster where the pool's nodes have a GPU).

:func:`check` validates a template and a deployment's variables the way Prefect does: the
server's own ``WorkPoolCreate`` schema, the variables against the template's JSON schema, and the
worker's job configuration rendered from both (on Kubernetes, the rendered Job is read back
with the Kubernetes client's ``V1Job`` model).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

from radflow.errors import ConfigurationError
from radflow.plugins.spec import Plugin, Resources

POOL_TYPES = ("process", "docker", "kubernetes")
DEFAULT_REGISTRY = "ghcr.io/radflow"
SITE_IMAGE = "site"  # every plugin stacked on the worker image (docs/containers.md)
# a Kubernetes resource quantity (apimachinery's format: a decimal and a suffix)
QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def check_pool_type(pool_type: str) -> str:
    if pool_type not in POOL_TYPES:
        raise ConfigurationError(f"work pool type {pool_type!r} is not one of "
                                 f"{', '.join(POOL_TYPES)}",
                                 fix="use process (the default), docker or kubernetes")
    return pool_type


def _worker(pool_type: str) -> Any:
    if check_pool_type(pool_type) == "docker":
        from prefect_docker.worker import DockerWorker

        return DockerWorker
    if pool_type == "kubernetes":
        from prefect_kubernetes.worker import KubernetesWorker

        return KubernetesWorker
    from prefect.workers.process import ProcessWorker

    return ProcessWorker


def ensure_site_pool(ctx: Any) -> None:
    """The site's work pool (``ctx``: its SiteContext), of its type (a container pool gets
    radflow's base job template)."""
    pool_type = ctx.config.work_pool_type
    ctx.prefect().ensure_work_pool(ctx.config.work_pool, pool_type,
                                   None if pool_type == "process" else base_job_template(pool_type))


def base_job_template(pool_type: str) -> dict[str, Any]:
    """The base job template radflow gives a new pool of this type."""
    template = copy.deepcopy(_worker(pool_type).get_default_base_job_template())
    if pool_type == "kubernetes":
        properties = template["variables"]["properties"]
        properties["gpu_limit"] = {
            "title": "GPU limit", "type": "integer", "minimum": 0,
            "description": "GPUs the flow run's container gets (nvidia.com/gpu); radflow sets "
                           "it for flows whose tasks need a GPU."}
        properties["radflow_home"] = {
            "title": "RADFLOW_HOME", "type": "string", "default": "/var/lib/radflow",
            "description": "Where the site folder is mounted (the same path as on the site)."}
        properties["radflow_home_claim"] = {
            "title": "RADFLOW_HOME volume claim", "type": "string", "default": "radflow-home",
            "description": "The PersistentVolumeClaim that holds RADFLOW_HOME."}
        pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
        container["volumeMounts"] = [{"name": "radflow-home", "mountPath": "{{ radflow_home }}"}]
        pod["volumes"] = [{"name": "radflow-home",
                           "persistentVolumeClaim": {"claimName": "{{ radflow_home_claim }}"}}]
    return template


@dataclass(frozen=True)
class Needs:
    """What one deployment's flow runs need: the image holding its code, and the resources."""

    image: str
    resources: Resources


def combined(resources: list[Resources]) -> Resources:
    """The largest of each resource (a flow run executes its tasks in one container)."""
    if not resources:
        return Resources()
    gpus = [r.gpu for r in resources]
    gpu = "required" if "required" in gpus else "optional" if "optional" in gpus else "none"
    return Resources(cpus=max(r.cpus for r in resources),
                     memory_gb=max(r.memory_gb for r in resources), gpu=gpu)


def image_of(plugin: Plugin, registry: str, version: str) -> str:
    return plugin.image or f"{registry}/radflow-{plugin.name}:{version}"


def needs_of(owner: Plugin, plugins: list[Plugin], registry: str, version: str) -> Needs:
    """A deployment declared by ``owner``: core's flows run any plugin's tasks (the site image
    and the largest resources of all); a plugin's flows run its own (its image)."""
    if owner.name == "core":
        return Needs(f"{registry}/radflow-{SITE_IMAGE}:{version}",
                     combined([t.resources for p in plugins for t in p.tasks]))
    return Needs(image_of(owner, registry, version), combined([t.resources for t in owner.tasks]))


def job_variables(pool_type: str, needs: Needs, site: str | None = None,
                  home: str | None = None) -> dict[str, Any]:
    """The deployment's job variables for a pool type (none for ``process``). A flow run reads
    its site's configuration from RADFLOW_HOME, so the container gets the site folder at the
    same path (``home``), and ``RADFLOW_SITE``."""
    r = needs.resources
    gpus = 1 if r.gpu == "required" else 0
    env = {k: v for k, v in {"RADFLOW_SITE": site, "RADFLOW_HOME": home,
                             "TCP_NODELAY": "1"}.items() if v}
    if check_pool_type(pool_type) == "docker":
        create: dict[str, Any] = {"nano_cpus": int(r.cpus * 1e9)}
        if gpus:
            create["device_requests"] = [{"Driver": "nvidia", "Count": gpus,
                                          "Capabilities": [["gpu"]]}]
        values = {"image": needs.image, "mem_limit": f"{math.ceil(r.memory_gb * 1024)}m",
                  "container_create_kwargs": create, "env": env,
                  # the site's Orthanc and Prefect listen on loopback only
                  "network_mode": "host"}
        if home:
            values["volumes"] = [f"{home}:{home}"]
        return values
    if pool_type == "kubernetes":
        memory = f"{math.ceil(r.memory_gb * 1024)}Mi"
        values = {"image": needs.image, "cpu_request": f"{int(r.cpus * 1000)}m",
                  "cpu_limit": f"{int(r.cpus * 1000)}m", "memory_request": memory,
                  "memory_limit": memory, "env": env}
        if home:
            values["radflow_home"] = home
        if gpus:
            values["gpu_limit"] = gpus
        return values
    return {}


def check(pool_type: str, template: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """Validate a base job template and one deployment's job variables as Prefect does; returns
    the worker's job configuration rendered from both (its ``job_manifest`` on Kubernetes).

    Raises:
        ConfigurationError: naming what Prefect (or the Kubernetes model) refused.
    """
    from prefect.client.orchestration import PrefectClient
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.schema_tools import ValidationError, validate

    try:
        WorkPoolCreate(name="radflow-check", type=pool_type, base_job_template=template)
        validate(variables, template["variables"], raise_on_error=True, preprocess=True,
                 ignore_required=False, allow_none_with_default=True)
        # rendered offline: a client that is never called (radflow's templates refer to no block
        # document and no Prefect variable)
        offline = PrefectClient(api="http://127.0.0.1:9/api")
        config = run_coro_as_sync(_worker(pool_type).job_configuration.from_template_and_values(
            template, variables, client=offline))
    except (ValueError, ValidationError) as exc:
        raise ConfigurationError(f"the {pool_type} job template or its variables are not valid "
                                 f"for Prefect: {exc}",
                                 fix="see docs/containers.md for the variables each pool "
                                     "takes") from exc
    rendered = config.model_dump(mode="json")
    if pool_type == "kubernetes":
        _check_job(rendered["job_manifest"])
    return rendered


def _check_job(manifest: dict[str, Any]) -> None:
    """The manifest read back with the Kubernetes client's V1Job model (types and names), and
    the quantities it holds in Kubernetes' format."""
    import asyncio

    from kubernetes_asyncio.client import ApiClient

    manifest = copy.deepcopy(manifest)
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        if isinstance(container.get("env"), dict):  # the worker lists them so at run time
            container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]

    async def read() -> Any:
        async with ApiClient() as client:  # the client's own reader of API objects
            return client._ApiClient__deserialize(manifest, "V1Job")

    job = asyncio.run(read())
    if job.kind != "Job" or not job.spec.template.spec.containers:
        raise ConfigurationError("the rendered Kubernetes manifest is not a Job with a container",
                                 fix="keep the kubernetes pool's job_manifest a batch/v1 Job")
    for container in job.spec.template.spec.containers:
        for part in (container.resources.limits or {}, container.resources.requests or {}):
            for name, quantity in part.items():
                if not QUANTITY.fullmatch(str(quantity)):
                    raise ConfigurationError(f"{name} {quantity!r} is no Kubernetes quantity",
                                             fix="use e.g. 2000m CPU, 4096Mi memory")


def site_job_variables(pool_type: str, registry: str = DEFAULT_REGISTRY,
                       version: str | None = None, site: str | None = None,
                       home: str | None = None) -> dict[str, dict[str, Any]]:
    """Job variables of every deployment the installed plugins declare, by flow module path."""
    from radflow import __version__
    from radflow.plugins import plugins as installed_plugins

    plugins = installed_plugins()
    return {spec.flow: job_variables(pool_type, needs_of(plugin, plugins, registry,
                                                         version or __version__), site, home)
            for plugin in plugins for spec in plugin.deployments}
