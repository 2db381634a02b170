"""A typed client for a site's Orthanc, built on orthanc-api-client (REST) and dicomweb-client
(STOW-RS).

Every failure raises :class:`radflow.errors.OrthancError` with the HTTP status, the URL and
the fix; a file Orthanc cannot parse raises :class:`radflow.errors.DicomInputError`.

Example:
    ```python
    from radflow.orthanc import OrthancClient

    orthanc = OrthancClient("http://127.0.0.1:8042", "radflow", "secret")
    for series in orthanc.find_series(Modality="CT"):
        orthanc.download_series(series.orthanc_id, "/tmp/ct")
    ```
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as oac

from radflow.errors import ConfigurationError, DicomInputError, OrthancError
from radflow.orthanc.models import UploadResult, series_state
from radflow.types import SeriesRef

logger = logging.getLogger(__name__)
T = TypeVar("T")

_ORTHANC_BAD_FILE_FORMAT = 15
_ORTHANC_INEXISTENT_TAG = 21


class OrthancClient:
    """Talk to one Orthanc over HTTP (REST and DICOMweb).

    Args:
        url: the Orthanc root URL, e.g. ``http://127.0.0.1:8042`` (use 127.0.0.1: Orthanc listens
            on every interface, radflow only ever talks to it on loopback).
        username: an HTTP user registered in Orthanc.
        password: its password.
        timeout: seconds to wait for each HTTP answer.
    """

    def __init__(self, url: str, username: str, password: str, *, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._username = username
        self._password = password
        self._api = OrthancApiClient(self.url + "/", user=username, pwd=password)
        self._session = requests.Session()  # uploads: Orthanc's error body matters there
        self._session.auth = (username, password)

    def credentials(self) -> tuple[str, str, str]:
        """(url, username, password): to make the same client in another process."""
        return self.url, self._username, self._password

    def __repr__(self) -> str:  # never shows the password
        return f"OrthancClient({self.url!r}, user={self._username!r})"

    # -- error translation ---------------------------------------------------------------------
    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except oac.NotAuthorized as exc:
            raise OrthancError(
                f"{what} was refused: wrong or missing credentials",
                status=exc.http_status_code,
                url=exc.url or self.url,
                fix="use the site's credentials (`radflow site credentials --site SITE`)",
            ) from exc
        except oac.ResourceNotFound as exc:
            raise OrthancError(
                f"{what}: no such resource in Orthanc",
                status=404,
                url=exc.url or self.url,
                fix="list what is stored with `radflow site status` or Orthanc Explorer; "
                "the resource may have been deleted",
            ) from exc
        except oac.HttpError as exc:
            body = exc.request_response.text[:300] if exc.request_response is not None else ""
            raise OrthancError(
                f"{what} failed: {exc.msg} {body}".strip(),
                status=exc.http_status_code,
                url=exc.url or self.url,
                fix="see Orthanc's log (RADFLOW_HOME/sites/SITE/logs/orthanc.log)",
            ) from exc
        except (oac.ConnectionError, oac.TimeoutError) as exc:
            raise OrthancError(
                f"{what}: {exc.msg}",
                status=None,
                url=exc.url or self.url,
                fix="start the site (`radflow site up --site SITE`) or check the Orthanc URL",
            ) from exc

    def _get(self, endpoint: str, what: str) -> Any:
        with self._translated(what):
            return self._api.get_json(endpoint, timeout=self.timeout)

    def _post(self, endpoint: str, what: str, **kwargs: Any) -> Any:
        with self._translated(what):
            response = self._api.post(endpoint, timeout=self.timeout, **kwargs)
        return response.json() if response.content else None

    # -- system ----------------------------------------------------------------------------------
    def system(self) -> dict[str, Any]:
        """Orthanc's ``/system`` answer (version, AE title, DICOM port...)."""
        return self._get("system", "reading /system")

    def statistics(self) -> dict[str, Any]:
        """Counts of patients, studies, series and instances, and disk usage."""
        return self._get("statistics", "reading /statistics")

    def patients(self) -> list[str]:
        """Orthanc identifiers of every stored patient."""
        return self._get("patients", "listing patients")

    def plugins(self) -> list[str]:
        """Names of the loaded plugins (``dicom-web`` must be among them)."""
        return self._get("plugins", "listing plugins")

    # -- upload ----------------------------------------------------------------------------------
    def upload_bytes(self, data: bytes, *, what: str = "upload") -> UploadResult:
        """Store one DICOM Part 10 file given as bytes (REST ``POST /instances``).

        Raises:
            DicomInputError: Orthanc cannot parse the file, or it lacks a tag Orthanc indexes by.
            OrthancError: any other refusal, or no answer.
        """
        url = f"{self.url}/instances"
        try:
            answer = self._session.post(url, data=data, timeout=self.timeout)
        except requests.RequestException as exc:
            raise OrthancError(f"{what}: {type(exc).__name__}", status=None, url=url,
                               fix="start the site (`radflow site up --site SITE`)") from exc
        if answer.status_code == 200:
            body = answer.json()
            if isinstance(body, list):  # a zip archive: several instances
                body = body[0] if body else {"ID": None, "Status": "Failed"}
            return UploadResult(None, body.get("ID"), body.get("Status", "Success"))
        try:
            error = answer.json()
        except ValueError:
            error = {}
        reason = error.get("OrthancStatus")
        if reason == _ORTHANC_BAD_FILE_FORMAT:
            raise DicomInputError(
                f"Orthanc refused {what}: not a DICOM file it can parse "
                f"({error.get('Details', 'corrupt or truncated')})",
                fix="check the file with `dcmdump FILE`; re-export it from its source",
            )
        if reason == _ORTHANC_INEXISTENT_TAG:
            raise DicomInputError(
                f"Orthanc refused {what}: the file lacks a tag Orthanc indexes by "
                "(PatientID, StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID); "
                "a DICOMDIR or a bare data set is not a storable instance",
                fix="store image/SR/SEG instances that carry their UIDs",
            )
        if answer.status_code in (401, 403):
            raise OrthancError(f"{what} was refused: wrong or missing credentials",
                               status=answer.status_code, url=url,
                               fix="use the site's credentials (`radflow site credentials --site SITE`)")
        raise OrthancError(f"{what} failed: {error.get('Message', answer.text[:200])}",
                           status=answer.status_code, url=url,
                           fix="see Orthanc's log (RADFLOW_HOME/sites/SITE/logs/orthanc.log)")

    def upload_file(self, path: str | Path) -> UploadResult:
        """Store one DICOM file over REST.

        Raises:
            DicomInputError: Orthanc cannot parse the file.
            OrthancError: Orthanc refused it or did not answer.
        """
        path = Path(path)
        result = self.upload_bytes(path.read_bytes(), what=f"upload of {path}")
        return UploadResult(path, result.instance_id, result.status)

    def upload_files(self, paths: Iterable[str | Path]) -> list[UploadResult]:
        """Store many files over REST; a file Orthanc cannot parse is reported, not raised."""
        results = []
        for path in paths:
            try:
                results.append(self.upload_file(path))
            except DicomInputError as exc:
                results.append(UploadResult(Path(path), None, "Failed", exc.message))
        return results

    def store_dataset(self, dataset: Any) -> UploadResult:
        """Store a pydicom Dataset (a derived object: SEG, SR...). Storing it again is a no-op
        (``AlreadyStored``): derived objects have deterministic UIDs."""
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return self.upload_bytes(buffer.getvalue(), what=f"store of {dataset.SOPClassUID.name}")

    def stow(self, paths: Iterable[str | Path]) -> list[str]:
        """Store files with DICOMweb STOW-RS; returns the SOP Instance UIDs Orthanc accepted.

        Raises:
            OrthancError: Orthanc rejected one or more instances (their UIDs are in the message).
        """
        import pydicom
        from dicomweb_client.api import DICOMwebClient

        datasets = [pydicom.dcmread(p) for p in paths]
        client = DICOMwebClient(url=f"{self.url}/dicom-web", session=self._session)
        try:
            answer = client.store_instances(datasets=datasets)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise OrthancError(
                f"STOW-RS of {len(datasets)} instances failed: {exc}",
                status=status,
                url=f"{self.url}/dicom-web/studies",
                fix="check the credentials and Orthanc's log",
            ) from exc
        except requests.ConnectionError as exc:
            raise OrthancError(
                "STOW-RS: connection refused",
                status=None,
                url=f"{self.url}/dicom-web/studies",
                fix="start the site (`radflow site up --site SITE`)",
            ) from exc
        failed = [item.ReferencedSOPInstanceUID for item in answer.get("FailedSOPSequence", [])]
        if failed:
            raise OrthancError(
                f"STOW-RS rejected {len(failed)} instance(s): {', '.join(failed[:5])}",
                status=200,
                url=f"{self.url}/dicom-web/studies",
                fix="see Orthanc's log for why each instance was rejected",
            )
        return [item.ReferencedSOPInstanceUID for item in answer.get("ReferencedSOPSequence", [])]

    def stow_bytes(self, data: bytes) -> tuple[bool, str]:
        """Store one file's bytes with STOW-RS as they are (no parsing on this side: Orthanc
        judges them). Returns (stored, Orthanc's reason when not).

        Raises:
            OrthancError: no answer, or the credentials were refused.
        """
        import uuid

        boundary = f"radflow-{uuid.uuid4().hex}"
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
                + f"\r\n--{boundary}--\r\n".encode())
        url = f"{self.url}/dicom-web/studies"
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                                   f"boundary={boundary}", "Accept": "application/dicom+json"}
        try:
            answer = self._session.post(url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise OrthancError(f"STOW-RS: {type(exc).__name__}", status=None, url=url,
                               fix="start the site (`radflow site up --site SITE`)") from exc
        if answer.status_code in (401, 403):
            raise OrthancError("STOW-RS was refused: wrong or missing credentials",
                               status=answer.status_code, url=url,
                               fix="use the site's credentials (`radflow site credentials`)")
        try:
            reply = answer.json()
        except ValueError:
            reply = {}
        stored = bool(reply.get("00081199", {}).get("Value")) and answer.status_code == 200
        failed = reply.get("00081198", {}).get("Value", [])
        reason = "" if stored else (
            f"HTTP {answer.status_code}; failure reason "
            f"{failed[0].get('00081197', {}).get('Value', ['?'])[0] if failed else '-'}")
        return stored, reason

    # -- find and read ---------------------------------------------------------------------------
    def find_series(self, **query: str) -> list[SeriesRef]:
        """Find series by DICOM tags (Orthanc's ``/tools/find``; ``*`` wildcards allowed).

        Example: ``orthanc.find_series(Modality="CT", StudyInstanceUID="1.2.3")``.
        """
        body = {"Level": "Series", "Query": query, "Expand": True}
        found = self._post("tools/find", "finding series", json=body)
        return [SeriesRef.from_orthanc(item) for item in found]

    def get_series(self, orthanc_id: str) -> SeriesRef:
        """One series by its Orthanc identifier."""
        return SeriesRef.from_orthanc(self._get(f"series/{orthanc_id}", f"reading series {orthanc_id}"))

    def series_by_uid(self, series_uid: str) -> SeriesRef:
        """One series by its SeriesInstanceUID.

        Raises:
            OrthancError: (404) no such series is stored.
        """
        found = self.find_series(SeriesInstanceUID=series_uid)
        if not found:
            raise OrthancError(
                f"no series with SeriesInstanceUID {series_uid}",
                status=404,
                url=f"{self.url}/tools/find",
                fix="check the UID, or push the series first (`radflow data push`)",
            )
        return found[0]

    def series_instances(self, orthanc_id: str) -> list[str]:
        """Instance identifiers of a series, in Orthanc's slice order."""
        body = self._get(f"series/{orthanc_id}/ordered-slices", f"ordering series {orthanc_id}")
        ordered = body.get("Dicom", [])
        if ordered:
            return [path.split("/")[2] for path in ordered]
        return self._get(f"series/{orthanc_id}", f"reading series {orthanc_id}")["Instances"]

    def resource(self, level: str, orthanc_id: str) -> dict[str, Any]:
        """The raw JSON of a patient, study, series or instance (``level`` is the collection)."""
        return self._get(f"{level}/{orthanc_id}", f"reading {level}/{orthanc_id}")

    def series_tags(self, orthanc_id: str) -> dict[str, dict[str, Any]]:
        """The header of every instance of a series in one request (no pixel data):
        instance id -> simplified tags."""
        return self._get(f"series/{orthanc_id}/instances-tags?simplify",
                         f"reading the headers of series {orthanc_id}")

    def transfer_syntaxes(self, instance_ids: list[str], *, workers: int = 4) -> dict[str, str | None]:
        """The transfer syntax each instance was stored with (Orthanc metadata)."""

        def one(instance_id: str) -> str | None:
            try:
                with self._translated(f"reading the transfer syntax of {instance_id}"):
                    return self._api.get(f"instances/{instance_id}/metadata/TransferSyntax",
                                         timeout=self.timeout).text.strip() or None
            except OrthancError as exc:
                if exc.status == 404:  # older instances may lack the metadata
                    return None
                raise

        return dict(zip(instance_ids, _map(one, instance_ids, workers), strict=True))

    def series_states(self, page: int = 1000) -> dict[str, dict[str, Any]]:
        """Every series with its ``State`` (see :func:`series_state`), ``IsStable`` and instance
        count (paged ``/series?expand``)."""
        states: dict[str, dict[str, Any]] = {}
        since = 0
        while True:
            batch = self._get(f"series?expand&since={since}&limit={page}", "listing series")
            for body in batch:
                states[body["ID"]] = {"State": series_state(body),
                                      "IsStable": bool(body.get("IsStable")),
                                      "Instances": len(body.get("Instances", []))}
            if len(batch) < page:
                return states
            since += page

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM Part 10 bytes of one instance."""
        with self._translated(f"reading instance {instance_id}"):
            return self._api.get_binary(f"instances/{instance_id}/file", timeout=self.timeout)

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The tags of one instance (``/instances/ID/tags?simplify``)."""
        return self._get(f"instances/{instance_id}/tags?simplify", f"reading tags of {instance_id}")

    def download_series(self, orthanc_id: str, dest: str | Path, *, workers: int = 4) -> list[Path]:
        """Write every instance of a series into ``dest`` as ``<Orthanc instance id>.dcm``.

        Returns the paths written, in slice order.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        ids = self.series_instances(orthanc_id)

        def fetch(instance_id: str) -> Path:
            data = self.instance_file(instance_id)
            target = dest / f"{instance_id}.dcm"
            target.write_bytes(data)
            return target

        return _map(fetch, ids, workers)

    # -- delete ----------------------------------------------------------------------------------
    def delete(self, level: str, orthanc_id: str) -> None:
        """Delete a patient, study, series or instance (``level`` is the REST collection)."""
        if level not in ("patients", "studies", "series", "instances"):
            raise ConfigurationError(f"cannot delete at level {level!r}",
                                     fix="use patients, studies, series or instances")
        with self._translated(f"deleting {level}/{orthanc_id}"):
            self._api.delete(f"{level}/{orthanc_id}", timeout=self.timeout)

    def last_change(self) -> int:
        """The sequence number of Orthanc's latest change."""
        return int(self._get("changes?last", "reading /changes")["Last"])

    def changes(self, since: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of Orthanc's ``/changes`` feed (``Changes``, ``Last``, ``Done``)."""
        return self._get(f"changes?since={since}&limit={limit}", "reading /changes")


def _map(fn: Callable[[str], T], items: list[str], workers: int) -> list[T]:
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))
