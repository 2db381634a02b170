"""Send DICOM files to a site's Orthanc over DICOM C-STORE (DCMTK's ``storescu``).

DCMTK keeps Nagle's algorithm on unless ``TCP_NODELAY=1`` is in its environment, which makes
C-STORE about 3x slower on loopback; radflow always sets it. After sending, the counts that
Orthanc holds are checked against what was sent.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from radflow.errors import ConfigurationError, DicomInputError, OrthancError
from radflow.orthanc.client import OrthancClient

CHUNK = 500  # files per storescu association
_STATUS = re.compile(r"Received Store Response \((?P<status>[^)]*)\)")


@dataclass
class PushResult:
    """What happened to a folder pushed to Orthanc."""

    files: int = 0
    sent: int = 0
    failed: list[str] = field(default_factory=list)  # "path: reason" for each file not stored
    skipped: list[str] = field(default_factory=list)  # not DICOM Part 10 files
    series: dict[str, int] = field(default_factory=dict)  # SeriesInstanceUID -> files sent
    orthanc_series: list[str] = field(default_factory=list)  # Orthanc's ids of those series
    studies: set[str] = field(default_factory=set)
    seconds: float = 0.0
    verified: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def storescu_path(dcmtk_bin: Path) -> Path:
    """DCMTK's storescu (not the same-named script some Python packages install)."""
    path = dcmtk_bin / "storescu"
    if not path.exists():
        raise ConfigurationError(f"DCMTK's storescu is missing ({path})",
                                 fix="run `make setup` (installs Debian's dcmtk package)")
    return path


def collect(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Split files (folders are walked) into DICOM Part 10 files and the rest."""
    dicom, other = [], []
    for root in paths:
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            (dicom if is_dicom_file(path) else other).append(path)
    return dicom, other


def _headers(files: list[Path]) -> dict[Path, tuple[str, str, str, str]]:
    """(transfer syntax, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of each file."""
    import pydicom

    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd files are storescu's and Orthanc's to judge
        for path in files:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["SeriesInstanceUID", "StudyInstanceUID",
                                                    "SOPInstanceUID"])
                ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
            except Exception:  # noqa: BLE001 (any unreadable file: storescu reports why)
                ts = ""
                ds = {}
            found[path] = (ts, str(ds.get("StudyInstanceUID", "")),
                           str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", "")))
    return found


# storescu proposes one compressed transfer syntax per run (plus the uncompressed ones): files
# are sent in groups, each with the option that proposes their own encoding, so nothing is
# decompressed (storescu cannot) and Orthanc receives the bytes as they are.
PROPOSE = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.4.100": "-xm",
    "1.2.840.10008.1.2.4.101": "-xh", "1.2.840.10008.1.2.4.102": "-xn",
    "1.2.840.10008.1.2.4.103": "-xl", "1.2.840.10008.1.2.4.104": "-x2",
    "1.2.840.10008.1.2.4.105": "-x3", "1.2.840.10008.1.2.4.106": "-xo",
    "1.2.840.10008.1.2.4.107": "-x4", "1.2.840.10008.1.2.4.108": "-x5",
}


_SENDING = re.compile(r"^I: Sending file: (?P<path>.+)$")
_FAILED = re.compile(r"^E: Store Failed, file: (?P<path>.+):$")
_IGNORED = re.compile(r"^W: (?P<reason>.+) in file: (?P<path>.+), ignoring file$")
_REFUSED = ("Association Rejected", "Association Request Failed")


def _outcomes(output: str) -> tuple[list[str], set[str], dict[str, str], dict[str, str]]:
    """Parse ``storescu -v``: files attempted (in order), stored, failed and ignored."""
    attempted, stored, failed, ignored = [], set(), {}, {}
    current = None
    lines = output.splitlines()
    for k, line in enumerate(lines):
        if m := _SENDING.match(line):
            current = m.group("path")
            attempted.append(current)
        elif (m := _STATUS.search(line)) and current:
            if m.group("status").startswith(("Success", "Warning")):
                stored.add(current)
            else:
                failed[current] = f"Orthanc answered {m.group('status')}"
        elif m := _FAILED.match(line):
            reason = lines[k + 1][3:].strip() if k + 1 < len(lines) else "store failed"
            failed.setdefault(m.group("path"), reason)
        elif m := _IGNORED.match(line):
            ignored[m.group("path")] = f"not sent: {m.group('reason')}"
    return attempted, stored, failed, ignored


def c_store(
    files: list[Path],
    *,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    dcmtk_bin: Path,
    propose: str = "-x=",
    progress: Callable[[int], None] | None = None,
) -> tuple[set[Path], dict[Path, str]]:
    """C-STORE ``files`` (all of one transfer syntax, proposed with storescu's ``propose``
    option); returns (stored, {rejected file: reason}).

    Orthanc aborts the association when it rejects a file, so the files after a rejection are
    sent again on a new association: one bad file never costs the others.
    """
    storescu = storescu_path(dcmtk_bin)
    env = {**os.environ, "TCP_NODELAY": "1"}
    remaining = [str(f) for f in files]
    stored: set[str] = set()
    rejected: dict[str, str] = {}
    while remaining:
        chunk = remaining[:CHUNK]
        argv = [str(storescu), "-v", "-R", "-nh", propose, "-aet", calling_aet,
                "-aec", called_aet, host, str(port), *chunk]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace",
                             check=False)  # file names and values may not be UTF-8
        output = run.stdout + run.stderr
        attempted, ok, failed, ignored = _outcomes(output)
        if "missing presentation contexts" in output:  # nothing in the chunk was sendable
            rejected.update({f: ignored.get(f, "storescu found no DICOM object to send in it")
                             for f in chunk})
            remaining = remaining[len(chunk):]
            continue
        refused = any(marker in output for marker in _REFUSED) or \
            (not ok and "Peer aborted Association" in output)
        if refused and not stored and not ok:
            raise OrthancError(
                f"Orthanc refused the DICOM association from {calling_aet} to {called_aet}: "
                + " ".join(line for line in output.splitlines() if line.startswith(("E:", "F:")))[:400],
                status=None, url=f"dicom://{called_aet}@{host}:{port}",
                fix=f"check the site's AE title and port (`radflow site status`), and that the "
                f"sender {calling_aet}@{host} is an allowed DICOM peer (`radflow site up "
                "--allow-modality NAME=AET@HOST:PORT`)",
            )
        stored |= ok
        rejected.update(ignored)
        first_failure = next((f for f in attempted if f in failed), None)
        if first_failure:  # later failures on the same association are collateral: resend them
            rejected[first_failure] = failed[first_failure]
        before = len(remaining)
        remaining = [f for f in remaining if f not in stored and f not in rejected]
        if len(remaining) == before:  # no progress: give up on this chunk with storescu's words
            reason = next((line for line in output.splitlines() if line.startswith(("E:", "F:"))),
                          f"not acknowledged (storescu exit {run.returncode})")
            rejected.update({f: reason for f in chunk})
            remaining = remaining[len(chunk):]
        if progress:
            progress(len(stored))
    return {Path(f) for f in stored}, {Path(f): r for f, r in rejected.items()}


def push(
    paths: Iterable[str | Path],
    *,
    client: OrthancClient,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "RADFLOW",
    dcmtk_bin: Path = Path("/usr/bin"),
    progress: Callable[[int], None] | None = None,
) -> PushResult:
    """Send every DICOM file under ``paths`` to Orthanc over C-STORE, then verify in Orthanc.

    Raises:
        DicomInputError: there is no DICOM file under ``paths``.
        OrthancError: Orthanc refused the association, or holds fewer instances than were sent.
    """
    roots = [Path(p) for p in paths]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise DicomInputError(f"no such file or folder: {', '.join(missing)}",
                              fix="check the path (`radflow data synth --out DIR` creates data)")
    files, other = collect(roots)
    result = PushResult(files=len(files), skipped=[str(p) for p in other])
    if not files:
        raise DicomInputError(
            f"no DICOM Part 10 file under {', '.join(map(str, roots))} "
            f"({len(other)} other file(s) skipped)",
            fix="point at a folder of .dcm files, e.g. one written by `radflow data synth`",
        )
    headers = _headers(files)
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(headers[path][0], []).append(path)
    stored: set[Path] = set()
    rejected: dict[Path, str] = {}
    sent = 0
    began = time.perf_counter()
    for ts, members in sorted(groups.items()):
        if ts in PROPOSE or not ts:
            done_before = sent
            ok, bad = c_store(members, host=host, port=port, called_aet=called_aet,
                              calling_aet=calling_aet, dcmtk_bin=dcmtk_bin,
                              propose=PROPOSE.get(ts, "-x="),
                              progress=progress and (lambda n, b=done_before: progress(b + n)))
        else:  # no storescu option proposes this encoding: Orthanc's REST API takes it as is
            ok, bad = _rest_upload(client, members)
        stored |= ok
        rejected.update(bad)
        sent += len(ok)
    result.seconds = time.perf_counter() - began
    result.sent = len(stored)
    result.failed = [f"{path}: {reason}" for path, reason in sorted(rejected.items())]
    instances = {(headers[p][2], headers[p][3]) for p in stored}  # a repeated SOP UID is one
    result.series = dict(Counter(series for series, _ in instances))
    result.studies = {headers[p][1] for p in stored}
    result.verified, result.orthanc_series = verify(client, result.series)
    return result


def _rest_upload(client: OrthancClient, files: list[Path]) -> tuple[set[Path], dict[Path, str]]:
    results = client.upload_files(files)
    return ({r.path for r in results if r.ok},
            {r.path: f"REST upload refused: {r.error}" for r in results if not r.ok})


def verify(client: OrthancClient, series: dict[str, int]) -> tuple[bool, list[str]]:
    """Whether Orthanc holds at least the sent number of instances for every series, and
    Orthanc's identifiers of the series it holds."""
    held_all, ids = True, []
    for uid, count in series.items():
        if not uid:
            continue
        found = client.find_series(SeriesInstanceUID=uid)
        ids += [s.orthanc_id for s in found]
        if sum(s.instance_count for s in found) < count:
            held_all = False
    return held_all, sorted(ids)
