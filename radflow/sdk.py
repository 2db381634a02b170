"""The plugin author's SDK: everything a plugin needs, from one module.

A task that computes something::

    from radflow.sdk import SeriesRef, task, site_runtime, load_volume

    @task(name="intensity-stats")
    def intensity_stats(series: SeriesRef, site: str | None = None) -> dict[str, float]:
        volume = load_volume(site_runtime(site).orthanc, series)
        ...

A producer that writes a DICOM object (core caches it, stores it in Orthanc, records it with
its key, status and lineage, and returns a typed reference)::

    from radflow.sdk import ProducerContext, SeriesRef, producer

    @producer("SEG", algorithm="bone-threshold", version="1.0")
    def bone(ctx: ProducerContext, series: SeriesRef, level: float = 300.0):
        volume = ctx.volume(series, expected_modality="CT")
        ...  # build the SEG with series_instance_uid=ctx.series_uid, sop_instance_uid=ctx.instance_uid

A plugin declares them (their inputs and outputs are read from the annotations)::

    plugin = Plugin(name="bone", version="0.1.0", description="...", tasks=(bone,))

See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from radflow.anatomy import ANATOMICAL_STRUCTURE, code_for
from radflow.enums import ResultKind, ResultStatus
from radflow.errors import (
    ConfigurationError,
    DicomInputError,
    EmptyResult,
    OrthancError,
    PluginNotFound,
    PolicyViolation,
    RadflowError,
)
from radflow.imaging import Volume, load_volume
from radflow.plugins import DeploymentSpec, Plugin, Resources, find_task, get_plugin
from radflow.results import Algorithm, Derived, ProducerContext, producer
from radflow.runtime import SiteRuntime, site_runtime
from radflow.tasks.retry import retry_transient
from radflow.types import DerivedRef, FeatureTable, ReportRef, SegmentationRef, SeriesRef
from radflow.uids import derived_uid


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None, resources: Resources | None = None, retries: int = 2,
         retry_delay_seconds: list[float] | None = None, **prefect_options: Any) -> Any:
    """A Prefect task with radflow's defaults: transient failures retried (bad input never),
    and the resources and description `radflow plugins list` shows.

    Use it bare (``@task``) or with options (``@task(name="stats", resources=...)``).
    """
    from prefect import task as prefect_task

    def decorate(function: Callable[..., Any]) -> Any:
        wrapped = prefect_task(name=name or function.__name__.replace("_", "-"), retries=retries,
                               retry_delay_seconds=retry_delay_seconds or [5, 20],
                               retry_condition_fn=retry_transient, **prefect_options)(function)
        wrapped.radflow_resources = resources
        wrapped.radflow_description = description
        return wrapped

    return decorate(fn) if fn is not None else decorate


__all__ = [
    "ANATOMICAL_STRUCTURE", "Algorithm", "ConfigurationError", "DeploymentSpec", "Derived",
    "DerivedRef", "DicomInputError", "EmptyResult", "FeatureTable", "OrthancError", "Plugin",
    "PluginNotFound", "PolicyViolation", "ProducerContext", "RadflowError", "ReportRef",
    "Resources", "ResultKind", "ResultStatus", "SegmentationRef", "SeriesRef", "SiteRuntime",
    "Volume", "code_for", "derived_uid", "find_task", "get_plugin", "load_volume", "producer",
    "retry_transient", "site_runtime", "task",
]
