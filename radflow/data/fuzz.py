"""Malformed and conflicting DICOM for testing a site: real files mutated with a fixed seed, and
senders that deliver each file on its own (a C-STORE association per file, or a STOW-RS request
per file), so that one bad file never hides what happens to another.

Mutations (:data:`MUTATIONS`): a file cut short, bytes flipped in the header, a bogus value
length, a transfer syntax claimed that the data does not have, a study UID reused under another
patient, a series UID reused under another study, a SOP Instance UID reused with other content,
empty UIDs, and the file intact (so that every reused UID meets its original).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radflow.data.push import PROPOSE, c_store
from radflow.errors import ConfigurationError, OrthancError

MUTATIONS = ("intact", "truncated", "flipped_header", "bogus_length", "wrong_syntax",
             "study_uid_other_patient", "series_uid_other_study", "sop_uid_other_content",
             "empty_uid")
SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5")
LENGTH_TAGS = ((0x0010, 0x0010), (0x0008, 0x1030), (0x0008, 0x103E), (0x0008, 0x0070),
               (0x0018, 0x0050), (0x0020, 0x0013))


@dataclass(frozen=True)
class FuzzFile:
    path: Path
    mutation: str
    source: Path


def _meta_end(data: bytes) -> int:
    """Where the file meta information ends (its group length tells)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        return 132
    (length,) = struct.unpack("<I", data[140:144])
    return 144 + length


def _dataset(data: bytes):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _save(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _uid(rng: np.random.Generator) -> str:
    return "2.25." + str(int(rng.integers(1, 2**62)) * int(rng.integers(1, 2**62)))


def mutate(data: bytes, mutation: str, rng: np.random.Generator) -> bytes:
    """One mutation of one DICOM Part 10 file (deterministic for a seeded ``rng``)."""
    start = _meta_end(data)
    if mutation == "intact":
        return data
    if mutation == "truncated":
        return data[:int(rng.integers(start, max(start + 1, len(data) - 1)))]
    if mutation == "flipped_header":
        out = bytearray(data)
        end = min(len(out), start + 1500)
        for offset in rng.integers(start, max(start + 1, end), size=6):
            out[int(offset)] ^= int(rng.integers(1, 256))
        return bytes(out)
    if mutation == "bogus_length":
        out = bytearray(data)
        for group, element in LENGTH_TAGS:
            at = data.find(struct.pack("<HH", group, element), start)
            if at < 0:
                continue
            if data[at + 4:at + 6].isalpha():  # explicit VR: a 2-byte length after the VR
                out[at + 6:at + 8] = struct.pack("<H", int(rng.choice([0xFFFF, 0xFFFE, 7777])))
            else:  # implicit VR: a 4-byte length
                out[at + 4:at + 8] = struct.pack("<I", int(rng.choice([0xFFFFFFF0, 999999, 3])))
            return bytes(out)
        return data[:start] + b"\x10\x00\x10\x00PN\xff\xff" + data[start:]
    if mutation == "wrong_syntax":
        import pydicom
        from pydicom.filewriter import write_file_meta_info

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True).file_meta
        actual = str(meta.get("TransferSyntaxUID", ""))
        meta.TransferSyntaxUID = str(rng.choice([s for s in SYNTAXES if s != actual]))
        buffer = io.BytesIO()
        buffer.write(data[:128] + b"DICM")
        write_file_meta_info(buffer, meta, enforce_standard=False)
        return buffer.getvalue() + data[start:]
    ds = _dataset(data)
    if mutation == "study_uid_other_patient":
        ds.PatientID = f"OTHER-{int(rng.integers(1000, 9999))}"
        ds.PatientName = "Other^Patient"
        ds.SeriesInstanceUID, ds.SOPInstanceUID = _uid(rng), _uid(rng)
    elif mutation == "series_uid_other_study":
        ds.StudyInstanceUID, ds.SOPInstanceUID = _uid(rng), _uid(rng)
    elif mutation == "sop_uid_other_content":
        ds.SeriesInstanceUID = _uid(rng)
        ds.SeriesDescription = "same SOP Instance UID, other content"
    elif mutation == "empty_uid":
        setattr(ds, str(rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])), "")
    else:
        raise ConfigurationError(f"unknown mutation {mutation!r}",
                                 fix=f"use one of {', '.join(MUTATIONS)}")
    if "SOPInstanceUID" in ds and ds.file_meta is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID or "1.2"
    return _save(ds)


def build_corpus(sources: list[Path], out: Path, count: int, seed: int) -> list[FuzzFile]:
    """``count`` files: every source intact once, the rest mutations of random sources."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    corpus = []
    for k in range(count):
        source = sources[k] if k < len(sources) else sources[int(rng.integers(len(sources)))]
        mutation = "intact" if k < len(sources) else str(rng.choice(MUTATIONS[1:]))
        path = out / f"{k:04d}-{mutation}.dcm"
        try:
            path.write_bytes(mutate(source.read_bytes(), mutation, rng))
        except Exception:  # noqa: BLE001 (a source pydicom cannot rewrite: keep it as it is)
            shutil.copy(source, path)
            mutation = "intact"
        corpus.append(FuzzFile(path, mutation, source))
    return corpus


def _syntax(path: Path) -> str:
    try:
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta
        return str(meta.get("TransferSyntaxUID", ""))
    except Exception:  # noqa: BLE001 (unreadable: let storescu judge)
        return ""


def send_each_dicom(files: list[Path], *, host: str, port: int, called_aet: str,
                    calling_aet: str = "RADFLOW",
                    dcmtk_bin: Path = Path("/usr/bin")) -> dict[Path, str | None]:
    """C-STORE each file on an association of its own; returns file -> None (stored) or the
    reason it was not."""
    outcome: dict[Path, str | None] = {}
    for path in files:
        try:
            stored, rejected = c_store([path], host=host, port=port, called_aet=called_aet,
                                       calling_aet=calling_aet, dcmtk_bin=dcmtk_bin,
                                       propose=PROPOSE.get(_syntax(path), "-x="))
            outcome[path] = None if stored else rejected.get(path, "not stored")
        except (OrthancError, subprocess.SubprocessError) as exc:
            outcome[path] = str(exc)
    return outcome


def send_each_stow(files: list[Path], orthanc) -> dict[Path, str | None]:
    """STOW-RS each file's bytes in a request of its own."""
    outcome: dict[Path, str | None] = {}
    for path in files:
        stored, reason = orthanc.stow_bytes(path.read_bytes())
        outcome[path] = None if stored else reason
    return outcome
