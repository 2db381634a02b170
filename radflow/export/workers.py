"""The export's worker processes: each fetches its instances from the site's Orthanc itself,
de-identifies and writes them (:func:`radflow.export.writer.one`). Parsing, the rules and
writing are CPU work the GIL would keep on one core; the files never cross a pipe (a bare
``requests`` session fetches them: the full Orthanc client takes 0.4 s to import)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))  # processes that fetch, de-identify, write

_WORKER: dict[str, Any] = {}


def _init(deid: Any, out: Path, orthanc: tuple[str, str, str]) -> None:
    import requests  # a bare session: the full Orthanc client takes 0.4 s to import

    url, user, password = orthanc
    session = requests.Session()
    session.auth = (user, password)
    _WORKER.update(deid=deid, out=out, session=session, url=url)


def _one(instance_id: str) -> dict[str, Any]:
    """One instance, or ``{"error": ...}`` (radflow's errors do not cross a process pipe)."""
    from radflow.errors import RadflowError

    try:
        return _one_instance(instance_id)
    except RadflowError as exc:
        return {"error": f"{exc.message} ({exc.fix})", "instance": instance_id}
    except Exception as exc:  # noqa: BLE001 (pydicom, the writer: the export stops, saying which)
        return {"error": f"{type(exc).__name__}: {exc}", "instance": instance_id}


def _one_instance(instance_id: str) -> dict[str, Any]:
    import pydicom

    from radflow.errors import OrthancError
    from radflow.export.writer import one

    url = f"{_WORKER['url']}/instances/{instance_id}/file"
    try:
        answer = _WORKER["session"].get(url, timeout=120)
        answer.raise_for_status()
    except OSError as exc:  # requests' errors are OSErrors
        raise OrthancError(f"reading instance {instance_id} failed: {exc}", status=None, url=url,
                           fix="check that the site's Orthanc runs (`radflow site status`)") from exc
    return one(pydicom.dcmread(io.BytesIO(answer.content)), _WORKER["deid"], _WORKER["out"])


def write(ids: list[str], deid: Any, out: Path, orthanc: tuple[str, str, str],
           workers: int, progress: Any = None) -> Any:
    """Every instance through :func:`radflow.export.writer.one`, ``workers`` processes side
    by side (in this process for a small export: a process takes half a second to start)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from radflow.export.writer import WriteReport

    out.mkdir(parents=True, exist_ok=True)
    report = WriteReport()
    if workers <= 1:
        _init(deid, out, orthanc)
        outcomes: Any = map(_one, ids)
        for done, outcome in enumerate(outcomes, start=1):
            _take(report, outcome, progress, done)
        return report
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init, initargs=(deid, out, orthanc)) as pool:
        for done, outcome in enumerate(pool.map(_one, ids, chunksize=4), start=1):
            _take(report, outcome, progress, done)
    return report


def _take(report: Any, outcome: dict[str, Any], progress: Any = None, done: int = 0) -> None:
    from radflow.errors import DicomInputError
    from radflow.export.writer import add

    if "error" in outcome:
        raise DicomInputError(f"instance {outcome['instance']} could not be exported: "
                              f"{outcome['error']}", fix="repair or remove that instance in "
                              "Orthanc, then file the export again")
    add(report, outcome)
    if progress is not None and done % 25 == 0:
        progress(done)


