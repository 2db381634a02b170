"""The plugin mechanism: discovery, broken plugins, declarations read from the tasks themselves,
tasks found by what they do, the example plugins (written against radflow.sdk alone) installed
and run, and a "load everything" check of plugins, flows, blocks, deployments and CLI groups."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from conftest import dciodvfy
from prefect import Task

from radflow.errors import ConfigurationError, PluginNotFound
from radflow.plugins import Plugin, TaskSpec, discover, find_task, get_plugin, site_deployments
from radflow.types import ReportRef, SegmentationRef, SeriesRef

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"
RADFLOW = str(Path(sys.executable).parent / "radflow")


def test_builtin_plugins_are_discovered_with_typed_tasks(cli) -> None:
    listed = {p["name"]: p for p in json.loads(cli("plugins", "list", "--json", check=True).stdout)}
    assert {"core", "nnunet", "radiomics"} <= set(listed)
    assert all(listed[n]["status"] == "ok" for n in ("core", "nnunet", "radiomics"))
    segment = listed["nnunet"]["tasks"][0]
    assert segment["signature"] == "segment(series: SeriesRef, model: str) -> SegmentationRef"
    assert segment["resources"]["gpu"] == "optional"
    quantify = listed["radiomics"]["tasks"][0]
    assert quantify["signature"] == "quantify(seg: SegmentationRef, params: str) -> ReportRef"
    assert "radflow-nnunet-model" in listed["nnunet"]["blocks"]
    assert "radflow.flows.ingest.ingest" in listed["core"]["deployments"]


def test_declarations_are_the_functions_own_signatures() -> None:
    """What a plugin declares is what its task function takes and returns: nothing is written
    twice, so nothing can disagree (the old radiomics declaration said FeatureTable while the
    task returned a tuple)."""
    for status in discover():
        for spec in status.plugin.tasks:
            fn = spec.task.fn
            hints = get_type_hints(fn)
            params = [p for p in inspect.signature(fn).parameters if p not in ("site", "force")]
            assert list(spec.inputs) == params, spec.name
            assert spec.inputs == {p: hints[p] for p in params}, spec.name
            assert spec.output == hints["return"], spec.name


def test_a_task_without_annotations_is_refused() -> None:
    from prefect import task

    @task
    def untyped(series, site=None):
        return series

    with pytest.raises(ConfigurationError, match="parameter 'series' has no type annotation"):
        Plugin(name="x", version="0", description="x", tasks=(untyped,))


def test_unknown_plugin_or_task_names_the_fix() -> None:
    with pytest.raises(PluginNotFound, match="ensure that `radflow-segmentor` is installed"):
        get_plugin("segmentor")
    with pytest.raises(PluginNotFound, match=r"has no task 'predict'.*segment"):
        get_plugin("nnunet").task("predict")
    with pytest.raises(PluginNotFound, match="no installed plugin offers a task 'segment' "
                                             "taking ReportRef"):
        find_task("segment", (ReportRef,))


def test_tasks_are_found_by_what_they_do() -> None:
    segment = find_task("segment", (SeriesRef,), SegmentationRef)
    assert segment.task is get_plugin("nnunet").task("segment").task
    quantify = find_task("quantify", (SegmentationRef,), ReportRef)
    assert quantify.task is get_plugin("radiomics").task("quantify").task


def test_discovering_plugins_stays_light() -> None:
    """What every command, the supervisor and the web app do (the CLI, the plugins, the site's
    components) imports neither Prefect nor the plugins' tasks and pages: they are named and
    imported when first read, and then they are the objects the names name."""
    heavy = ("prefect", "fastapi", "radflow_nnunet.tasks", "radflow_review.step", "torch")
    code = ("import sys, radflow.cli; from radflow.plugins import plugins; "
            "from radflow.site.components import site_components; plugins(); site_components(); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    from radflow_review.step import review

    from radflow_nnunet.block import NnUNetModel

    assert get_plugin("review").steps["review"] is review
    assert list(get_plugin("nnunet").blocks) == [NnUNetModel]
    with pytest.raises(PluginNotFound, match=r"'radflow_nothing\.tasks:x', which cannot be "
                                             r"imported.*No module named 'radflow_nothing'"):
        list(Plugin(name="x", version="0", description="x",
                    tasks=("radflow_nothing.tasks:x",)).tasks)


def test_a_broken_plugin_is_reported_not_fatal(tmp_path: Path) -> None:
    dist = tmp_path / "radflow_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: radflow-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[radflow.plugins]\nbroken = radflow_broken:plugin\n"
                                           "[radflow.cli]\nbroken = radflow_broken:app\n")
    (tmp_path / "radflow_broken.py").write_text("raise ImportError('libfoo.so not found')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([RADFLOW, "plugins", "list", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert listed["broken"]["status"] == "broken"
    assert "libfoo.so not found" in listed["broken"]["error"]
    assert listed["nnunet"]["status"] == "ok"  # the others still load
    human = subprocess.run([RADFLOW, "plugins", "list"], env=env, capture_output=True, text=True,
                           check=False)
    assert human.returncode == 0 and "BROKEN" in human.stdout


@pytest.fixture(scope="module")
def examples_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugins of the author's guide, pip-installed into a folder of their own."""
    target = tmp_path_factory.mktemp("example-plugins")
    for name in ("radflow-hello", "radflow-bone"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(EXAMPLES / name)],
                       check=True)
    return target


@pytest.mark.parametrize("name", ["radflow-hello", "radflow-bone"])
def test_the_examples_use_the_sdk_alone_in_under_50_lines(name: str) -> None:
    module = next((EXAMPLES / name / "src").glob("*/plugin.py"))
    assert len(module.read_text().splitlines()) < 50
    imported = {node.module for node in ast.walk(ast.parse(module.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module}
    radflow = {m for m in imported if m.startswith("radflow")}
    assert radflow == {"radflow.sdk"}, radflow


def test_the_example_plugins_install_and_list(examples_installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(examples_installed)}
    out = subprocess.run([RADFLOW, "plugins", "list", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert listed["hello"]["status"] == "ok" and listed["hello"]["distribution"] == "radflow-hello"
    assert listed["hello"]["tasks"][0]["signature"] == \
        "intensity-stats(series: SeriesRef) -> dict[str, float]"
    assert listed["bone"]["tasks"][0]["signature"] == \
        "segment(series: SeriesRef, level: float) -> SegmentationRef"


@pytest.mark.services
def test_the_example_plugins_run_in_a_flow(examples_installed: Path, orthanc, site, synth_dir,
                                           monkeypatch, tmp_path: Path) -> None:
    """hello's task runs in a flow; bone's producer stands in for nnU-Net in the case flow (the
    same task name and types), and core stores, records and caches its SEG."""
    from prefect import flow

    from radflow.data.push import push
    from radflow.flows.segment_quantify import segment_and_quantify_case
    from radflow.site.registration import site_prefect

    monkeypatch.syspath_prepend(str(examples_installed))
    discover.cache_clear()
    push([synth_dir / "case_000"], client=orthanc, host="127.0.0.1",
         port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
    info = orthanc.series_by_uid(json.loads((synth_dir / "manifest.json").read_text())
                                 ["cases"][0]["series_uid"])
    try:
        stats_task = get_plugin("hello").task("intensity-stats").task
        with pytest.raises(PluginNotFound, match="2 plugins offer a task 'segment'"):
            find_task("segment", (SeriesRef,), SegmentationRef)

        @flow
        def hello_flow(series: SeriesRef) -> dict:
            return stats_task(series, "alpha")

        bone = get_plugin("bone").task("segment").task

        @flow
        def too_high() -> None:
            bone(info, level=99999.0, site="alpha")

        with site_prefect(site):
            stats = hello_flow(info)
            row = segment_and_quantify_case(info, site="alpha", segmenter="bone")
            again = segment_and_quantify_case(info, site="alpha", segmenter="bone")
            empty = too_high(return_state=True)
    finally:
        discover.cache_clear()
    # an empty result is permanent: the producer ran once, not three times
    assert empty.is_failed() and "no voxel of series" in empty.message
    from test_results import task_runs

    runs = task_runs(site, empty.state_details.flow_run_id)
    assert [(t.run_count, t.state.type.value) for t in runs] == [(1, "FAILED")]
    assert stats["voxels"] == 64 * 64 * info.instance_count
    assert stats["min"] >= -1100 and stats["max"] > 300  # air and bone
    assert -900 < stats["mean"] < 0
    assert row["status"] == "ok" and row["bone ml"] > 0
    assert again["cached"] and again["seg_result"] == row["seg_result"]
    seg = orthanc.find_series(StudyInstanceUID=info.study_uid, Modality="SEG")
    assert [s.description for s in seg] == ["SEG bone >= 250 HU"]
    sr = orthanc.find_series(StudyInstanceUID=info.study_uid, Modality="SR")
    for found in (*seg, *sr):  # what the example writes is as valid as what radflow writes
        path = tmp_path / f"{found.modality}.dcm"
        path.write_bytes(orthanc.instance_file(orthanc.series_instances(found.orthanc_id)[0]))
        assert dciodvfy(path) == ([], []), found.modality


def test_everything_loads_and_is_complete(cli) -> None:
    """Every plugin loads; every task is a Prefect task read into a complete declaration; every
    block is documented; every deployment's flow imports and takes a site; every command has
    --json."""
    from prefect.utilities.importtools import import_object

    statuses = discover()
    assert statuses and all(s.plugin is not None for s in statuses), [s.error for s in statuses]
    for status in statuses:
        plugin = status.plugin
        assert plugin.version and plugin.description and (
            plugin.tasks or plugin.deployments or plugin.steps or plugin.components)
        for spec in plugin.tasks:
            assert isinstance(spec, TaskSpec) and isinstance(spec.task, Task)
            assert spec.inputs and spec.output and spec.description
        for block in plugin.blocks:
            assert ".load(" in (block.__doc__ or "")
            for name, field in block.model_fields.items():
                assert field.description, f"{block.__name__}.{name} has no description"
    flows = [import_object(spec.flow) for spec in site_deployments()]
    assert {f.name for f in flows} >= {"ingest", "segment-and-quantify",
                                       "segment-and-quantify-case"}
    for spec, flow in zip(site_deployments(), flows, strict=True):
        assert "site" in flow.parameters.properties, f"{spec.flow} takes no site parameter"
        assert spec.description

    import typer.main

    from radflow.cli import app

    def commands(group, path=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*path, name))
            else:
                yield (*path, name), command

    found = list(commands(typer.main.get_command(app)))
    assert len(found) > 25 and any(p[0] == "model" for p, _ in found)  # a plugin's group
    lacking = [" ".join(p) for p, c in found if "--json" not in
               {o for param in c.params for o in param.opts}]
    assert lacking == []
