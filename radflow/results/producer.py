"""Producers: plugin functions that make a DICOM object (or a feature table) from site data,
while core does the rest.

A producer is a plain function that takes a :class:`ProducerContext` and typed inputs and
returns a pydicom Dataset, a :class:`~radflow.types.FeatureTable`, or a :class:`Derived` (both,
plus details). Decorated with :func:`producer` it becomes a Prefect task that:

1. computes the result key (the input UIDs, the algorithm, its version, its parameters' hash);
2. returns the recorded result when that key was made before and its object is still in Orthanc
   (``force=True`` makes it again as a new generation of the key: new UIDs, a new object in
   Orthanc beside the old one, a new ``draft`` result that supersedes the old one and what was
   made from it);
3. otherwise calls the function, checks that the object carries the key's deterministic UIDs,
   stores it in Orthanc, records it in the catalog (status ``draft``, lineage to its inputs,
   timings) and attaches the feature table;
4. returns a typed reference: a SegmentationRef for a SEG, a ReportRef for an SR.

Retries: only transient failures (Orthanc or Prefect unreachable) are retried.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from radflow.enums import ResultKind
from radflow.errors import ConfigurationError, DicomInputError, OrthancError
from radflow.hashing import short_hash
from radflow.results.keys import ResultKey
from radflow.types import REF_TYPES, DerivedRef, FeatureTable, SeriesRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Algorithm:
    """What makes a result: name, version, and the parameters that change its output.

    ``resolved`` carries whatever the identification looked up (e.g. the model block) on to the
    producer (``ctx.algorithm.resolved``) so that it is not looked up twice.
    """

    name: str
    version: str
    params: dict[str, Any] = field(default_factory=dict)
    resolved: Any = field(default=None, compare=False)

    @property
    def params_hash(self) -> str:
        return short_hash(self.params) if self.params else ""


@dataclass
class Derived:
    """What a producer returns when a bare Dataset or FeatureTable is not enough."""

    dataset: Any = None
    features: FeatureTable | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, value: Any) -> Derived:
        if isinstance(value, Derived):
            return value
        if isinstance(value, FeatureTable):
            return cls(features=value)
        if hasattr(value, "SOPInstanceUID"):
            return cls(dataset=value)
        raise ConfigurationError(
            f"a producer returned a {type(value).__name__}, not a pydicom Dataset, a FeatureTable "
            "or a radflow Derived", fix="return the object you made; core stores and records it")


class ProducerContext:
    """What a producer gets besides its inputs.

    Attributes:
        site: the site name.
        orthanc: the site's Orthanc client.
        key: the result key (its deterministic UIDs: ``series_uid``, ``instance_uid``, ``uid()``).
        algorithm: the identified algorithm (``algorithm.resolved``: what identification found).
        timings: seconds per step, filled by :meth:`timer`; recorded with the result.
    """

    def __init__(self, site: str, orthanc: Any, key: ResultKey, algorithm: Algorithm) -> None:
        self.site = site
        self.orthanc = orthanc
        self.key = key
        self.algorithm = algorithm
        self.timings: dict[str, float] = {}

    @property
    def series_uid(self) -> str:
        """The SeriesInstanceUID the object must carry."""
        return self.key.series_uid

    @property
    def instance_uid(self) -> str:
        """The SOPInstanceUID the object must carry."""
        return self.key.instance_uid

    def uid(self, *role: str) -> str:
        """Another deterministic UID of this result (e.g. a segment's tracking UID)."""
        return self.key.uid(*role)

    @contextmanager
    def timer(self, step: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - began

    def volume(self, series: SeriesRef, expected_modality: str | None = None) -> Any:
        """The series as a checked volume (:class:`radflow.imaging.Volume`); the time to read
        the series and to build the volume goes into ``timings`` (``read``, ``volume``)."""
        from radflow.imaging import load_volume

        return load_volume(self.orthanc, series, expected_modality=expected_modality,
                           timings=self.timings)

    def dicom(self, ref: DerivedRef) -> Any:
        """The DICOM object of a derived result, read from Orthanc."""
        import io
        import warnings

        import pydicom

        if not ref.orthanc_id:
            raise DicomInputError(f"result {ref.result_id} ({ref.kind}) has no DICOM object",
                                  fix="pass a result that was stored in Orthanc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(self.orthanc.instance_file(ref.orthanc_id)))

    @property
    def log(self) -> logging.Logger | logging.LoggerAdapter:
        try:
            from prefect import get_run_logger

            return get_run_logger()
        except Exception:  # noqa: BLE001 (outside a run: the module logger)
            return logger


@dataclass(frozen=True)
class ProducerSpec:
    """How a producer identifies and records what it makes."""

    kind: ResultKind
    algorithm: str | None
    version: str | None
    identify: Callable[..., Algorithm] | None
    fn: Callable[..., Any]

    def identity(self, arguments: dict[str, Any]) -> Algorithm:
        if self.identify is not None:
            wanted = inspect.signature(self.identify).parameters
            return self.identify(**{k: v for k, v in arguments.items() if k in wanted})
        params = {k: v for k, v in arguments.items() if not isinstance(v, SeriesRef | DerivedRef)}
        return Algorithm(self.algorithm or self.fn.__name__, self.version or "0", params)


def input_uid(ref: SeriesRef | DerivedRef) -> str:
    if isinstance(ref, SeriesRef):
        return ref.series_uid
    return ref.sop_instance_uid or ref.key


def produce(spec: ProducerSpec, arguments: dict[str, Any], site: str | None,
            force: bool) -> DerivedRef:
    """Run one producer call through the result service (see the module's docstring)."""
    from radflow.catalog.db import session_scope
    from radflow.results import store
    from radflow.runtime import site_runtime

    rt = site_runtime(site)
    refs = [v for v in arguments.values() if isinstance(v, SeriesRef | DerivedRef)]
    if not refs:
        raise ConfigurationError(f"producer {spec.fn.__name__} takes no SeriesRef or result",
                                 fix="give it the series or result it derives from")
    source = next(r if isinstance(r, SeriesRef) else r.source for r in refs)
    derived_from = next((r.result_id for r in refs if isinstance(r, DerivedRef)), None)
    algorithm = spec.identity(arguments)
    key = ResultKey(spec.kind, tuple(input_uid(r) for r in refs), algorithm.name,
                    algorithm.version, algorithm.params_hash)
    recomputes = None
    with session_scope(rt.catalog_url) as session:
        found = store.latest(session, key)
        if found is not None:
            key, row = found
            if not force and _still_stored(rt.orthanc, row.orthanc_id):
                features = store.features_of(session, row.id) \
                    if spec.kind == ResultKind.SR else None
                return store.to_ref(row, source, cached=True, features=features)
            if force:  # a new generation: new UIDs, a new object; the old one stays, superseded
                key, recomputes = key.next_generation(), row.id

    ctx = ProducerContext(rt.name, rt.orthanc, key, algorithm)
    output = Derived.coerce(spec.fn(ctx, **arguments))
    dataset, stored_id = output.dataset, None
    detail = dict(output.detail)
    if dataset is not None:
        _check_uids(spec, dataset, key)
        if spec.kind == ResultKind.SEG:
            detail["segments"] = {int(s.SegmentNumber): str(s.SegmentLabel)
                                  for s in dataset.SegmentSequence}
        with ctx.timer("store"):
            stored_id = rt.orthanc.store_dataset(dataset).instance_id
    began = time.perf_counter()
    with session_scope(rt.catalog_url) as session:
        row = store.record(
            session, key, source, orthanc_id=stored_id,
            sop_instance_uid=str(dataset.SOPInstanceUID) if dataset is not None else None,
            series_uid=str(dataset.SeriesInstanceUID) if dataset is not None else None,
            detail={**detail, "timings": {k: round(v, 4) for k, v in ctx.timings.items()}},
            derived_from_id=derived_from, recomputes=recomputes)
        if output.features is not None:
            store.replace_features(session, row, output.features)
        ctx.timings["catalog"] = time.perf_counter() - began
        row.detail = _with_timings(row.detail, ctx.timings)
        session.add(row)
        return store.to_ref(row, source, features=output.features)


def _with_timings(detail_json: str, timings: dict[str, float]) -> str:
    import json

    detail = json.loads(detail_json)
    detail["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return json.dumps(detail, default=str)


def _still_stored(orthanc: Any, orthanc_id: str | None) -> bool:
    if orthanc_id is None:
        return True  # a table-only result
    try:
        orthanc.resource("instances", orthanc_id)
        return True
    except OrthancError as exc:
        if exc.status == 404:
            return False  # deleted from Orthanc since: make it again
        raise


def _check_uids(spec: ProducerSpec, dataset: Any, key: ResultKey) -> None:
    got = (str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID))
    if got != (key.series_uid, key.instance_uid):
        raise ConfigurationError(
            f"producer {spec.fn.__name__} wrote SeriesInstanceUID/SOPInstanceUID {got}, not the "
            "result's deterministic UIDs: a re-run would store a copy",
            fix="build the object with series_instance_uid=ctx.series_uid and "
                "sop_instance_uid=ctx.instance_uid")


def producer(kind: ResultKind | str, *, name: str | None = None, algorithm: str | None = None,
             version: str | None = None, identify: Callable[..., Algorithm] | None = None,
             description: str | None = None, resources: Any = None, retries: int = 2,
             retry_delay_seconds: list[float] | None = None) -> Callable[[Callable], Any]:
    """Make a producer function a Prefect task backed by the core result service.

    Args:
        kind: what it makes (``SEG``, ``SR``...): decides the returned reference type.
        name: the task's name (default: the function's name, dashes for underscores).
        algorithm: the algorithm's name, when it does not depend on the inputs.
        version: its version.
        identify: or a function of the inputs returning an :class:`Algorithm` (e.g. the model
            named by a parameter, with that model's version).
        description: one line for `radflow plugins list` (default: the docstring's first line).
        resources: :class:`radflow.plugins.Resources` one call needs.
        retries: retries of transient failures.
        retry_delay_seconds: delays between them.

    Example:
        ```python
        @producer("SEG", algorithm="bone-threshold", version="1.0")
        def bone(ctx: ProducerContext, series: SeriesRef, level: float = 300.0) -> Dataset:
            volume = ctx.volume(series, expected_modality="CT")
            ...
            return hd.seg.Segmentation(..., series_instance_uid=ctx.series_uid,
                                       sop_instance_uid=ctx.instance_uid, ...)
        ```
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from radflow.tasks.retry import retry_transient

    kind = ResultKind(kind)
    ref_type = REF_TYPES.get(kind.value, DerivedRef)

    def decorate(fn: Callable[..., Any]) -> Any:
        signature = inspect.signature(fn)
        inner = list(signature.parameters.values())[1:]  # without ctx
        hints = get_type_hints(fn)
        spec = ProducerSpec(kind, algorithm, version, identify, fn)
        bound_signature = signature.replace(parameters=inner)

        def run(*args: Any, site: str | None = None, force: bool = False, **kwargs: Any) -> Any:
            bound = bound_signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return produce(spec, dict(bound.arguments), site, force)

        extra = [inspect.Parameter("site", inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=str | None),
                 inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False,
                                   annotation=bool)]
        run.__signature__ = signature.replace(parameters=inner + extra, return_annotation=ref_type)
        run.__annotations__ = {**{p.name: hints.get(p.name, Any) for p in inner},
                               "site": str | None, "force": bool, "return": ref_type}
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(run, attr, getattr(fn, attr))
        task_name = name or fn.__name__.replace("_", "-")
        first_ref = next((p.name for p in inner if hints.get(p.name) is SeriesRef or (
            isinstance(hints.get(p.name), type) and issubclass(hints[p.name], DerivedRef))), None)
        run_name = f"{task_name}-{{{first_ref}.orthanc_id}}" if first_ref else None
        if first_ref and hints.get(first_ref) is not SeriesRef:
            run_name = f"{task_name}-{{{first_ref}.source.orthanc_id}}"
        wrapped = task(name=task_name, retries=retries,
                       retry_delay_seconds=retry_delay_seconds or [5, 20],
                       retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
                       persist_result=True,  # a resumed (re-executed) run reads it back
                       task_run_name=run_name)(run)
        wrapped.radflow_producer = spec
        wrapped.radflow_resources = resources
        wrapped.radflow_description = description or (inspect.getdoc(fn) or "").split("\n")[0]
        return wrapped

    return decorate
