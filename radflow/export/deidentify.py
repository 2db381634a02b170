"""De-identification of one DICOM dataset by PS3.15 Annex E (:mod:`radflow.export.profile`
holds the rules), with what a project sets: its key, its options, the private attributes it
calls safe and its pixel-cleaning rules.

- **Pseudonyms** are a keyed HMAC (SHA-256) of the original value under the project's key:
  the same patient gets the same pseudonym in every export of the project, and nobody without
  the key can go back. The writer (:func:`radflow.export.writer.one`) returns each pair for
  the site's re-identification record.
- **Dates** shift by a per-patient number of days (365 to 4,014, from the HMAC of the patient
  id), the same across that patient's studies, when the project retains longitudinal temporal
  information with modified dates; otherwise they are emptied or set to a dummy.
- **UIDs** map to ``2.25.`` and the HMAC of the original: consistent across a whole export and
  across exports, so a SEG's and an SR's references resolve to the exported images.
- **Private attributes** are removed unless the project lists them (group, creator, element).
- **Safety nets** beyond the table: a person name or a date the table does not list is treated
  as the table treats its own; free text is cleaned of the patient's identifiers and of
  anything shaped like a date or a long number.
- **Burned-in text**: a series that says BurnedInAnnotation YES, or an ultrasound, a secondary
  capture or another kind that may carry text in its pixels without saying NO, is held back
  (:meth:`Deidentifier.hold_reason`) unless a pixel rule of the project covers it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from radflow.errors import ConfigurationError
from radflow.export.profile import OPTION_CODES, Profile, Rule

TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC"}
NUMBER_VRS = {"US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0}
DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0",
         "AS": "000D", "PN": "ANONYMOUS", "AE": "ANON", "CS": "ANON"}
# modalities and SOP classes whose pixels often carry text (screens, captures, reports)
TEXT_PRONE_MODALITIES = {"US", "SC", "OT", "XC", "DOC", "ES", "GM", "SM"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DICOM_ROOT = "1.2.840.10008."
DATE_PATTERNS = (re.compile(r"\b\d{4}[-./]?\d{2}[-./]?\d{2}\b"),
                 re.compile(r"\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b"),
                 re.compile(r"\d{5,}"))
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
PSEUDONYMS = {PATIENT_ID: "patient", PATIENT_NAME: "patient", 0x00080050: "accession",
              0x00200010: "study-id"}
CONTENT_SEQUENCE = 0x0040A730
# what a safety net may act on when the table does not list the attribute (None: an implicit
# VR file, whose element must be read to know)
NET_VRS = {"PN", "DA", "DT", "ST", "LT", "UT", "SQ", None}


@dataclass(frozen=True)
class PixelRule:
    """Boxes to blank in the pixels of matching images (x, y, width, height, in pixels);
    ``where`` holds DICOM keywords and the values they must equal (``Modality``, ``Rows``...)."""

    where: Mapping[str, str]
    boxes: tuple[tuple[int, int, int, int], ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PixelRule:
        boxes = raw.get("boxes") or []
        if not boxes or not all(isinstance(b, list | tuple) and len(b) == 4 for b in boxes):
            raise ConfigurationError(f"a pixel rule's boxes are {boxes!r}",
                                     fix="give boxes as [[x, y, width, height], ...]")
        where = {str(k): str(v) for k, v in (raw.get("where") or {}).items()}
        if not where:
            raise ConfigurationError("a pixel rule has no 'where'",
                                     fix="say which images it covers, e.g. {Modality: US, "
                                         "Rows: 768, Columns: 1024}")
        return cls(where=where, boxes=tuple(tuple(int(v) for v in b) for b in boxes))

    def covers(self, ds: Any) -> bool:
        return all(str(ds.get(k, "")).strip().upper() == v.strip().upper()
                   for k, v in self.where.items())


def parse_private(entry: str) -> tuple[int, str, int]:
    """``"0019,GEMS_ACQU_01,2a"`` -> (0x0019, creator, 0x2a): a private attribute called safe."""
    parts = entry.split(",")
    creator = ",".join(parts[1:-1]).strip()
    try:
        number, low = int(parts[0], 16), int(parts[-1], 16)
    except ValueError:
        number, low = -1, -1
    if number < 0 or number % 2 == 0 or not 0 <= low <= 0xFF or not creator:
        raise ConfigurationError(f"a safe private attribute is {entry!r}",
                                 fix="write it as GROUP,CREATOR,ELEMENT in hex, e.g. "
                                     "0019,GEMS_ACQU_01,2a (the group is odd)")
    return number, creator, low


@dataclass
class Deidentifier:
    """De-identifies datasets in place, by one project's key and rules."""

    key: bytes
    options: tuple[str, ...] = ()
    safe_private: tuple[str, ...] = ()
    pixel_rules: tuple[PixelRule, ...] = ()

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ConfigurationError("a project key shorter than 16 bytes",
                                     fix="use a key of 32 random bytes, kept at the site")
        self.profile = Profile(self.options)
        self._safe = {parse_private(e) for e in self.safe_private}

    # -- values ---------------------------------------------------------------------------
    def _digest(self, *parts: str) -> bytes:
        return hmac.new(self.key, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def pseudonym(self, kind: str, value: str) -> str:
        """A stable pseudonym: ``RF`` and 14 hex digits for a patient, 16 characters in all
        (SH's limit) for an accession number or a study id."""
        digest = self._digest(kind, value).hex().upper()
        return ("RF" if kind == "patient" else kind[0].upper()) + digest[:14 if kind == "patient"
                                                                           else 15]

    def uid(self, value: str) -> str:
        value = value.strip().rstrip("\x00")
        if not value or value.startswith(DICOM_ROOT):
            return value
        return f"2.25.{int.from_bytes(self._digest('uid', value)[:16], 'big')}"

    def date_offset(self, patient_id: str) -> timedelta:
        return timedelta(days=365 + int.from_bytes(self._digest("date", patient_id)[:4], "big")
                         % 3650)

    # -- the dataset ----------------------------------------------------------------------
    def hold_reason(self, ds: Any) -> str | None:
        """Why ``ds`` must not leave as it is (None: it may): burned-in text its pixels may
        carry, or a structured report whose content the options would not clean."""
        if "PixelData" in ds and not any(rule.covers(ds) for rule in self.pixel_rules):
            burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
            modality = str(ds.get("Modality", "")).upper()
            sop_class = str(ds.get("SOPClassUID", ""))
            if burned == "YES":
                return "BurnedInAnnotation is YES and no pixel rule of the project covers it"
            if burned != "NO" and (modality in TEXT_PRONE_MODALITIES
                                   or sop_class.startswith(SECONDARY_CAPTURE)):
                kind = "a secondary capture" if sop_class.startswith(SECONDARY_CAPTURE) \
                    else f"modality {modality}"
                return (f"{kind} may carry burned-in text and does not say BurnedInAnnotation "
                        f"NO; no pixel rule of the project covers it")
        if CONTENT_SEQUENCE in ds and (rule := self.profile.rule(CONTENT_SEQUENCE)) \
                and rule.action != "C":
            return ("a structured report: its content is kept only with the option "
                    "clean-structured-content")
        return None

    def apply(self, ds: Any) -> Any:
        """De-identify ``ds`` in place (call :meth:`hold_reason` first) and return it."""
        from pydicom.dataset import Dataset

        patient_id = str(ds.get("PatientID", "") or "")
        context = _Context(self, patient_id, identifiers(ds))
        cleaned_pixels = self._clean_pixels(ds)
        context.walk(ds, top=True)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for tag in (0x00020016, 0x00020017, 0x00020018):  # AE titles of who sent it
                if tag in meta:
                    del meta[tag]
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientIdentityRemoved = "YES"
        used = ["basic", *self.options, *(["retain-safe-private"] if self._safe else []),
                *(["clean-pixel-data"] if cleaned_pixels else [])]
        ds.DeidentificationMethod = ["radflow: PS3.15 Annex E", *used]
        codes = []
        for name in used:
            value, meaning = OPTION_CODES[name]
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = \
            "MODIFIED" if self.profile.keeps_dates else "REMOVED"
        return ds

    def _clean_pixels(self, ds: Any) -> bool:
        rule = next((r for r in self.pixel_rules if r.covers(ds)), None) \
            if "PixelData" in ds else None
        if rule is None:
            return False
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        pixels = ds.pixel_array.copy()
        colour = int(ds.get("SamplesPerPixel", 1)) > 1
        for x, y, width, height in rule.boxes:
            if colour:
                pixels[..., y:y + height, x:x + width, :] = 0
            else:
                pixels[..., y:y + height, x:x + width] = 0
        ds.PixelData = pixels.tobytes()
        ds.BurnedInAnnotation = "NO"
        return True


def identifiers(ds: Any) -> list[str]:
    """The patient's identifying strings in ``ds`` that free text must not repeat: name parts,
    ids, the birth date in common spellings, the people named in it."""
    found: set[str] = set()
    for keyword in ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
                    "NameOfPhysiciansReadingStudy", "RequestingPhysician"):
        for name in _values(ds.get(keyword)):
            found.update(part for part in re.split(r"[\^=\s,]+", str(name)) if len(part) >= 2)
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID",
                    "InstitutionName", "PatientAddress", "PatientTelephoneNumbers"):
        found.update(str(v).strip() for v in _values(ds.get(keyword)) if len(str(v).strip()) >= 2)
    birth = str(ds.get("PatientBirthDate", "") or "")
    if len(birth) == 8 and birth.isdigit():
        y, m, d = birth[:4], birth[4:6], birth[6:]
        found.update({birth, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"})
    return sorted(found, key=len, reverse=True)


def _values(element: Any) -> list[Any]:
    from pydicom.multival import MultiValue

    if element is None or element == "":
        return []
    return list(element) if isinstance(element, list | tuple | MultiValue) else [element]


def scrub(text: str, known: Iterable[str]) -> str:
    """``text`` without the known identifiers (whole words, any case), anything shaped like
    a date, and runs of five or more digits."""
    for value in known:
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "", text, flags=re.IGNORECASE)
    for pattern in DATE_PATTERNS:
        text = pattern.sub("", text)
    return re.sub(r"\s{2,}", " ", text).strip(" ,;:-_")


class _Context:
    def __init__(self, owner: Deidentifier, patient_id: str, known: list[str]) -> None:
        self.owner, self.patient_id, self.known = owner, patient_id, known
        self.offset = owner.date_offset(patient_id)

    def walk(self, ds: Any, top: bool = False) -> None:
        rules = self.owner.profile.rule
        for key in list(ds.keys()):
            tag = int(key)
            group, number = tag >> 16, tag & 0xFFFF
            if group % 2:  # private
                if not self._private_safe(ds, ds[key]):
                    del ds[tag]
                continue
            if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and number in (0x3000, 0x4000)):
                del ds[tag]  # curves, overlay data and overlay comments (Table E.1-1's xx rows)
                continue
            if group == 0x0002:
                continue
            rule = rules(tag)
            if rule is None and ds.get_item(key).VR not in NET_VRS:
                continue  # neither in the table nor caught by a safety net (read as it is)
            element = ds[key]
            self._act(ds, element, rule or self._net(element), top)

    def _net(self, element: Any) -> Rule:
        """What an attribute the table does not list gets: names and dates as the table's
        own, sequences walked, the rest kept."""
        if element.VR == "PN":
            return Rule("D", "", "safety net: a person name")
        if element.VR in ("DA", "DT"):
            return Rule("D", "", "safety net: a date")
        if element.VR in ("ST", "LT", "UT") or element.keyword == "TextValue":
            return Rule("C", "", "safety net: free text")
        return Rule("K", "", "not in the table")

    def _act(self, ds: Any, element: Any, rule: Rule, top: bool) -> None:
        action, vr, tag = rule.action, element.VR, int(element.tag)
        if self.owner.profile.keeps_dates and vr in ("DA", "DT", "TM") and action in ("D", "Z"):
            action = "C"
        if action == "X":
            del ds[tag]
        elif vr == "SQ":
            if action in ("Z", "D"):
                element.value = []
            else:  # kept, cleaned or its UIDs replaced: the items go through the same rules
                for item in element.value:
                    self.walk(item)
        elif action == "U" or (vr == "UI" and action in ("D", "C")):
            element.value = self._uids(element.value)
        elif tag in PSEUDONYMS and action in ("Z", "D") and top:
            original = str(element.value or "")
            source = self.patient_id if PSEUDONYMS[tag] == "patient" else original
            element.value = self.owner.pseudonym(PSEUDONYMS[tag], source) if source else ""
        elif action == "Z":
            element.value = b"" if vr.startswith("O") or vr == "UN" else \
                None if vr in NUMBER_VRS else ""
        elif action == "D":
            element.value = self._dummy(vr)
        elif action == "C":
            element.value = self._clean(element)

    def _private_safe(self, ds: Any, element: Any) -> bool:
        if not self.owner._safe:
            return False
        tag = int(element.tag)
        group, number = tag >> 16, tag & 0xFFFF
        if number < 0x1000:  # a private creator: kept when a safe element of its block is
            creator = str(element.value).strip()
            return any(g == group and c == creator for g, c, _ in self.owner._safe)
        creator_tag = (group << 16) | (number >> 8)
        creator = str(ds[creator_tag].value).strip() if creator_tag in ds else ""
        return (group, creator, number & 0xFF) in self.owner._safe

    def _uids(self, value: Any) -> Any:
        if isinstance(value, str) or value is None:
            return self.owner.uid(value) if value else value
        return [self.owner.uid(str(v)) for v in _values(value)]

    @staticmethod
    def _dummy(vr: str) -> Any:
        if vr in NUMBER_VRS:
            return NUMBER_VRS[vr]
        if vr.startswith("O") or vr == "UN":
            return b""
        return DUMMY.get(vr, "ANON")

    def _clean(self, element: Any) -> Any:
        vr, value = element.VR, element.value
        if vr in ("DA", "DT"):  # a DT's date part shifts, its time stays
            return self._shift_dates(value) if self.owner.profile.keeps_dates else DUMMY[vr]
        if vr == "TM":
            return value if self.owner.profile.keeps_dates else DUMMY[vr]
        if vr == "PN":
            return DUMMY["PN"]
        if vr in TEXT_VRS:
            if isinstance(value, str):
                return scrub(value, self.known)
            return [scrub(str(v), self.known) for v in _values(value)]
        return value

    def _shift_dates(self, value: Any) -> Any:
        def one(text: str) -> str:
            text = str(text)
            if len(text) < 8 or not text[:8].isdigit():
                return ""
            try:
                shifted = datetime.strptime(text[:8], "%Y%m%d").date() - self.offset
            except ValueError:
                return ""
            return max(shifted, date(1900, 1, 1)).strftime("%Y%m%d") + text[8:]

        if isinstance(value, str):
            return one(value)
        return [one(v) for v in _values(value)]
