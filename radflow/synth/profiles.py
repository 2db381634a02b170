"""Per-case metadata of synthetic studies: patient, study, scanner vendor and protocol.

Values vary from case to case (vendor, model, kVp, kernel, slice thickness, contrast, sex, age)
so that cohort filters have something to filter. A site profile (:mod:`radflow.synth.sites`)
fixes the vendor, kVp, contrast phase and slice thickness instead. All names are invented.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, time, timedelta
from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import generate_uid

if TYPE_CHECKING:
    from radflow.synth.sites import SiteProfile


@dataclass(frozen=True)
class Vendor:
    manufacturer: str
    model: str
    software: str
    kernel: str
    pixel_representation: int  # 0 unsigned, 1 signed
    bits_stored: int
    intercept: float


VENDORS = [
    Vendor("SIEMENS", "SOMATOM Definition AS+", "syngo CT VA48A", "B30f", 0, 12, -1024.0),
    Vendor("GE MEDICAL SYSTEMS", "Revolution CT", "revo_ct_22BC.50", "STANDARD", 1, 16, -1024.0),
    Vendor("Philips", "Brilliance 64", "4.1.6", "B", 0, 12, -1024.0),
    Vendor("TOSHIBA", "Aquilion ONE", "V8.3", "FC08", 1, 16, 0.0),
]
FAMILY = ["MUSTERMANN", "DUPONT", "ROSSI", "SMITH", "NOWAK", "JANSEN", "GARCIA", "BERG",
          "KOWALSKI", "MARTIN", "SILVA", "NIELSEN"]
GIVEN_F = ["ERIKA", "MARIE", "GIULIA", "ANNA", "SOFIA", "LENA"]
GIVEN_M = ["MAX", "JEAN", "MARCO", "JOHN", "JAN", "LUCAS"]
AGENTS = ["Omnipaque 350", "Iomeron 400", "Ultravist 370"]
PHASE_WORDS = {"non-contrast": "NATIVE", "arterial": "ARTERIAL", "portal-venous": "PORTAL VENOUS"}


@dataclass(frozen=True)
class CaseSpec:
    """Everything that describes one synthetic CT study with one axial series."""

    index: int
    patient_name: str
    patient_id: str
    sex: str
    birth_date: date
    age_years: int
    weight_kg: float
    height_m: float
    study_date: date
    study_time: time
    accession: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    vendor: Vendor
    kvp: float
    tube_current_ma: int
    contrast: bool
    contrast_agent: str | None
    slice_thickness: float
    series_number: int
    series_description: str
    protocol_name: str
    station_name: str
    phase: str | None = None  # the site profile's contrast phase (None: the mixed set)

    def sop_uid(self, instance_number: int) -> str:
        return generate_uid(entropy_srcs=[self.series_uid, "instance", str(instance_number)])


def make_case(seed: int, index: int, rng: np.random.Generator,
              site: SiteProfile | None = None) -> CaseSpec:
    """Draw the metadata of case ``index`` (deterministic for a seed); with ``site``, its
    vendor, kVp, contrast phase and slice thickness are the profile's (and the UIDs and the
    patient ID name the profile, so that two sites with one seed do not share them)."""
    vendor = VENDORS[int(rng.integers(len(VENDORS)))]
    sex = "F" if rng.random() < 0.5 else "M"
    given = (GIVEN_F if sex == "F" else GIVEN_M)[int(rng.integers(6))]
    family = FAMILY[int(rng.integers(len(FAMILY)))]
    age = int(rng.integers(24, 86))
    study_date = date(2019, 1, 2) + timedelta(days=int(rng.integers(0, 6 * 365)))
    birth_date = study_date - timedelta(days=int(age * 365.25 + rng.integers(1, 300)))
    contrast = bool(rng.random() < 0.6)
    thickness = float(rng.choice([4.0, 5.0]))
    kvp = float(rng.choice([100.0, 120.0, 120.0, 140.0]))
    phase = "PORTAL VENOUS" if contrast else "NATIVE"
    entropy = [str(seed), str(index)] + ([site.name] if site else [])
    spec = CaseSpec(
        index=index,
        patient_name=f"{family}^{given}",
        patient_id=f"RF{seed % 1000:03d}{index:05d}",
        sex=sex,
        birth_date=birth_date,
        age_years=age,
        weight_kg=round(float(rng.normal(78 if sex == "M" else 66, 10)), 1),
        height_m=round(float(rng.normal(1.78 if sex == "M" else 1.65, 0.07)), 2),
        study_date=study_date,
        study_time=time(int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
        accession=f"A{seed % 100:02d}{index:06d}",
        study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
        series_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*entropy, "for"]),
        vendor=vendor,
        kvp=kvp,
        tube_current_ma=int(rng.integers(120, 400)),
        contrast=contrast,
        contrast_agent=AGENTS[int(rng.integers(len(AGENTS)))] if contrast else None,
        slice_thickness=thickness,
        series_number=int(rng.choice([2, 3, 4, 201])),
        series_description=f"ABD {phase} {thickness:.1f} {vendor.kernel}",
        protocol_name="Abdomen_Routine" if contrast else "Abdomen_Native",
        station_name=f"CT{int(rng.integers(1, 5)):02d}",
    )
    return spec if site is None else with_site(spec, site)


def with_site(spec: CaseSpec, site: SiteProfile) -> CaseSpec:
    """``spec`` with what ``site`` fixes: vendor, kVp, phase, thickness, and the names that
    follow from them (agent, series description, protocol, patient ID)."""
    contrast = site.phase != "non-contrast"
    agent = spec.contrast_agent or AGENTS[spec.index % len(AGENTS)]
    return replace(
        spec,
        patient_id=f"RF{site.name.upper()}{spec.patient_id[2:]}",
        vendor=site.vendor,
        kvp=site.kvp,
        contrast=contrast,
        contrast_agent=agent if contrast else None,
        slice_thickness=site.slice_thickness,
        series_description=f"ABD {PHASE_WORDS[site.phase]} {site.slice_thickness:.1f} "
                           f"{site.vendor.kernel}",
        protocol_name="Abdomen_Native" if not contrast else f"Abdomen_{site.phase.title()}",
        phase=site.phase,
    )
