"""The plugin mechanism: discovery, broken plugins, the example plugin installed and run, and a
"load everything" check of plugins, flows, blocks and deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import Task
from radflow.deployments import SITE_DEPLOYMENTS

from radflow.errors import PluginNotFound
from radflow.plugins import discover, get_plugin
from radflow.types import SeriesRef

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "radflow-hello"
RADFLOW = str(Path(sys.executable).parent / "radflow")


def test_builtin_plugins_are_discovered_with_typed_tasks(cli) -> None:
    listed = {p["name"]: p for p in json.loads(cli("plugins", "list", "--json", check=True).stdout)}
    assert listed["nnunet"]["status"] == "ok" and listed["radiomics"]["status"] == "ok"
    segment = listed["nnunet"]["tasks"][0]
    assert segment["signature"] == "segment(series: SeriesRef, model: str) -> SegmentationRef"
    assert segment["resources"]["gpu"] == "optional"
    assert listed["radiomics"]["tasks"][0]["signature"].endswith("-> FeatureTable")
    assert "radflow-nnunet-model" in listed["nnunet"]["blocks"]


def test_unknown_plugin_or_task_names_the_fix() -> None:
    with pytest.raises(PluginNotFound, match="ensure that `radflow-segmentor` is installed"):
        get_plugin("segmentor")
    with pytest.raises(PluginNotFound, match="has no task 'predict'.*segment"):
        get_plugin("nnunet").task("predict")


def test_a_broken_plugin_is_reported_not_fatal(tmp_path: Path) -> None:
    dist = tmp_path / "radflow_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: radflow-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[radflow.plugins]\nbroken = radflow_broken:plugin\n")
    (tmp_path / "radflow_broken.py").write_text("raise ImportError('libfoo.so not found')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([RADFLOW, "plugins", "list", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert listed["broken"]["status"] == "broken"
    assert "libfoo.so not found" in listed["broken"]["error"]
    assert listed["nnunet"]["status"] == "ok"  # the others still load
    human = subprocess.run([RADFLOW, "plugins", "list"], env=env, capture_output=True, text=True)
    assert human.returncode == 0 and "BROKEN" in human.stdout


@pytest.fixture(scope="module")
def hello_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin of the author's guide, pip-installed into a folder of its own."""
    target = tmp_path_factory.mktemp("hello-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLE)], check=True)
    return target


def test_the_example_plugin_installs_and_lists(hello_installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(hello_installed)}
    out = subprocess.run([RADFLOW, "plugins", "list", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    hello = next(p for p in json.loads(out.stdout) if p["name"] == "hello")
    assert hello["status"] == "ok" and hello["distribution"] == "radflow-hello"
    assert hello["tasks"][0]["signature"] == "intensity-stats(series: SeriesRef) -> dict"


@pytest.mark.services
def test_the_example_plugin_runs_in_a_flow(hello_installed: Path, orthanc, site, synth_dir,
                                           monkeypatch) -> None:
    from prefect import flow

    from radflow.data.push import push
    from radflow.site.registration import site_prefect

    monkeypatch.syspath_prepend(str(hello_installed))
    discover.cache_clear()
    try:
        stats_task = get_plugin("hello").task("intensity-stats").task
    finally:
        discover.cache_clear()
    push([synth_dir / "case_000"], client=orthanc, host="127.0.0.1",
         port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
    info = orthanc.series_by_uid(json.loads((synth_dir / "manifest.json").read_text())
                                 ["cases"][0]["series_uid"])

    @flow
    def hello_flow(series: SeriesRef) -> dict:
        return stats_task(series, "alpha")

    with site_prefect(site):
        stats = hello_flow(SeriesRef(info.orthanc_id, info.series_uid))
    assert stats["voxels"] == 64 * 64 * info.instance_count
    assert stats["min"] >= -1100 and stats["max"] > 300  # air and bone
    assert -900 < stats["mean"] < 0


def test_everything_loads_and_is_complete() -> None:
    """Every plugin loads; every task is a Prefect task with typed inputs; every block is
    documented; every deployment's flow imports and takes a site."""
    from prefect.utilities.importtools import import_object

    statuses = discover()
    assert statuses and all(s.plugin is not None for s in statuses), [s.error for s in statuses]
    for status in statuses:
        plugin = status.plugin
        assert plugin.version and plugin.description and plugin.tasks
        for spec in plugin.tasks:
            assert isinstance(spec.task, Task), f"{plugin.name}.{spec.name} is not a Prefect task"
            assert spec.inputs and spec.output and spec.description
        for block in plugin.blocks:
            assert ".load(" in (block.__doc__ or "")
            for name, field in block.model_fields.items():
                assert field.description, f"{block.__name__}.{name} has no description"
    for spec in SITE_DEPLOYMENTS:
        flow = import_object(spec.flow)
        assert "site" in flow.parameters.properties, f"{spec.flow} takes no site parameter"
        assert spec.description
