"""Site profiles: synthetic hospitals whose CT differs the way real hospitals' CT does.

A profile fixes what a hospital's routine abdominal protocol fixes, and shifts its population:

- the scanner vendor (manufacturer, model, software, reconstruction kernel, pixel
  representation and rescale intercept) and the tube voltage;
- the contrast phase (:data:`radflow.synth.phantom.PHASES`: organ and aorta HU);
- the noise level (the range of each case's noise standard deviation, HU);
- the slice thickness (= slice spacing, mm);
- the anatomy (:class:`radflow.synth.phantom.Anatomy`: habitus range, organ size scale,
  organ position shift).

Everything else (patients, dates, per-case organ sizes, positions, angles and HU jitter) is
still drawn per case from the seed. The profiles:

``a`` - a regional hospital's routine abdomen: SIEMENS SOMATOM Definition AS+ (B30f, 12-bit
    unsigned), 120 kV, portal-venous phase, 3 mm slices, low noise (sigma 10-14 HU), an
    average population.
``b`` - an academic centre's multiphase liver protocol, arterial series: GE Revolution CT
    (STANDARD, 16-bit signed), 100 kV, arterial phase, 1.5 mm slices (thin, so noisier:
    sigma 20-28 HU), a slimmer population with smaller organs, scanned in deep inspiration
    (organs 12 mm lower).
``c`` - a community hospital's low-dose non-contrast protocol (stones, follow-up): TOSHIBA
    Aquilion ONE (FC08, 16-bit signed, intercept 0), 120 kV, no contrast, 5 mm slices,
    high noise (sigma 24-32 HU), a heavier population with larger organs, shallow breath-hold
    (organs 10 mm higher).

No profile (``None``) is the mixed set: every case draws its own vendor, kVp, 4 or 5 mm slices,
contrast or not (60 %), noise sigma 12-20 HU, habitus 0.88-1.12; a seed gives the same data as
before profiles existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from radflow.errors import ConfigurationError
from radflow.synth.phantom import PHASES, Anatomy
from radflow.synth.profiles import VENDORS, Vendor


@dataclass(frozen=True)
class SiteProfile:
    """What one synthetic hospital's CT fixes (see the module docstring)."""

    name: str
    description: str
    vendor: Vendor
    kvp: float
    phase: str  # a name in radflow.synth.phantom.PHASES
    slice_thickness: float  # mm
    noise_sigma: tuple[float, float]  # HU, the range each case's sigma is drawn from
    anatomy: Anatomy

    def __post_init__(self) -> None:
        if not (self.name.isascii() and self.name.isalnum() and len(self.name) <= 16):
            raise ConfigurationError(
                f"a site profile's name must be 1 to 16 letters or digits, got {self.name!r}",
                fix="name it like 'a' or 'site2' (it goes into patient IDs and UIDs)")
        if self.phase not in PHASES:
            raise ConfigurationError(f"site profile {self.name!r}: unknown phase {self.phase!r}",
                                     fix=f"use one of {', '.join(sorted(PHASES))}")
        if not 0.5 <= self.slice_thickness <= 10:
            raise ConfigurationError(
                f"site profile {self.name!r}: slice thickness {self.slice_thickness} mm",
                fix="give a thickness between 0.5 and 10 mm (e.g. 1.5, 3 or 5)")
        low, high = self.noise_sigma
        if not 0 <= low <= high:
            raise ConfigurationError(
                f"site profile {self.name!r}: noise sigma range {self.noise_sigma}",
                fix="give (low, high) HU with 0 <= low <= high, e.g. (10.0, 14.0)")


_BY_MAKER = {v.manufacturer: v for v in VENDORS}
SIEMENS, GE, TOSHIBA = (_BY_MAKER[m] for m in ("SIEMENS", "GE MEDICAL SYSTEMS", "TOSHIBA"))

SITE_PROFILES: dict[str, SiteProfile] = {p.name: p for p in (
    SiteProfile("a", "regional hospital, routine portal-venous abdomen, 3 mm, low noise",
                SIEMENS, 120.0, "portal-venous", 3.0, (10.0, 14.0), Anatomy()),
    SiteProfile("b", "academic centre, arterial liver phase, 1.5 mm, slim, deep inspiration",
                GE, 100.0, "arterial", 1.5, (20.0, 28.0),
                Anatomy(habitus=(0.82, 1.0), organ_scale=0.94, organ_shift_mm=(0.0, 0.0, -12.0))),
    SiteProfile("c", "community hospital, low-dose non-contrast, 5 mm, heavier, shallow breath",
                TOSHIBA, 120.0, "non-contrast", 5.0, (24.0, 32.0),
                Anatomy(habitus=(1.04, 1.22), organ_scale=1.06, organ_shift_mm=(0.0, 0.0, 10.0))),
)}


def get_site_profile(name: str | SiteProfile | None) -> SiteProfile | None:
    """The profile called ``name`` (a profile is returned as it is; None means the mixed set)."""
    if name is None or isinstance(name, SiteProfile):
        return name
    try:
        return SITE_PROFILES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown site profile {name!r}; known: {', '.join(sorted(SITE_PROFILES))}",
            fix="e.g. radflow data synth --site-profile a (or leave it out for the mixed set)",
        ) from None
