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
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not DICOM Part 10 files
    series: dict[str, int] = field(default_factory=dict)  # SeriesInstanceUID -> files sent
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


def _uids(files: list[Path]) -> tuple[Counter[str], set[str]]:
    import pydicom

    series: Counter[str] = Counter()
    studies = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SeriesInstanceUID", "StudyInstanceUID"])
        series[str(ds.get("SeriesInstanceUID", ""))] += 1
        studies.add(str(ds.get("StudyInstanceUID", "")))
    return series, studies


def c_store(
    files: list[Path],
    *,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    dcmtk_bin: Path,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, list[str]]:
    """C-STORE ``files``; returns (number stored, failure lines)."""
    storescu = storescu_path(dcmtk_bin)
    env = {**os.environ, "TCP_NODELAY": "1"}
    stored, failures = 0, []
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        argv = [str(storescu), "-v", "-R", "-aet", calling_aet, "-aec", called_aet, host, str(port),
                *map(str, chunk)]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        output = run.stdout + run.stderr
        statuses = [m.group("status") for m in _STATUS.finditer(output)]
        ok = sum(1 for s in statuses if s.startswith("Success") or s.startswith("Warning"))
        stored += ok
        refused = ("Association Rejected", "Association Request Failed", "Peer aborted Association")
        if ok == 0 and any(marker in output for marker in refused):
            raise OrthancError(
                f"Orthanc refused the DICOM association from {calling_aet} to {called_aet}: "
                + " ".join(line for line in output.splitlines() if line.startswith(("E:", "F:")))[:400],
                status=None, url=f"dicom://{called_aet}@{host}:{port}",
                fix=f"check the site's AE title and port (`radflow site status`), and that the "
                f"sender {calling_aet}@{host} is an allowed DICOM peer (`radflow site up "
                "--allow-modality NAME=AET@HOST:PORT`)",
            )
        if ok < len(chunk):
            failures += [line for line in output.splitlines() if line.startswith(("E:", "F:"))]
            if not failures:
                failures.append(f"{len(chunk) - ok} file(s) not acknowledged (storescu exit {run.returncode})")
        if progress:
            progress(stored)
    return stored, failures


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
    series, result.studies = _uids(files)
    result.series = dict(series)
    began = time.perf_counter()
    result.sent, result.failed = c_store(files, host=host, port=port, called_aet=called_aet,
                                         calling_aet=calling_aet, dcmtk_bin=dcmtk_bin,
                                         progress=progress)
    result.seconds = time.perf_counter() - began
    result.verified = verify(client, result.series)
    return result


def verify(client: OrthancClient, series: dict[str, int]) -> bool:
    """True when Orthanc holds at least the sent number of instances for every series."""
    for uid, count in series.items():
        found = client.find_series(SeriesInstanceUID=uid)
        held = sum(s.instance_count for s in found)
        if held < count:
            return False
    return True
