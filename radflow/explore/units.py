"""Numbers and units as people write them on a page: HU, not UCUM's ``[hnsf'U]``; volumes in
mL, not 1.12477e+06 mm³; thousands separated, no exponents.

The catalog and the SRs keep UCUM codes (what DICOM wants); this is only how a page shows them.

    show(1124770.0, "mm3")      # ("1,125", "mL")
    show(61.4, "[hnsf'U]")      # ("61.4", "HU")
"""

from __future__ import annotations

import math

# UCUM code -> (unit as written, factor from the code's unit to the written one)
UNITS: dict[str, tuple[str, float]] = {
    "[hnsf'U]": ("HU", 1.0),
    "[hnsf'U]2": ("HU²", 1.0),
    "[hnsf'U]2.mm3": ("HU²·mL", 1e-3),
    "mm3": ("mL", 1e-3),
    "mm2": ("mm²", 1.0),
    "mm": ("mm", 1.0),
    "/mm": ("1/mm", 1.0),
    "mL": ("mL", 1.0),
    "ml": ("mL", 1.0),
    "cm3": ("mL", 1.0),
    "bit": ("bits", 1.0),
    "1": ("", 1.0),
    "kV": ("kV", 1.0),
    "T": ("T", 1.0),
}
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def unit(ucum: str | None) -> str:
    """A UCUM code as people write the unit (unknown codes as they are)."""
    if not ucum:
        return ""
    return UNITS.get(ucum, (ucum, 1.0))[0]


def number(value: float | int | None, digits: int = 4) -> str:
    """A number for a page: ``digits`` significant digits (whole numbers from 1,000 on),
    thousands separated, never an exponent for numbers a person meets (tiny ones as 1.2 times
    ten to the minus 5, written with a superscript); a dash for none."""
    if value is None:
        return "–"
    value = float(value)
    if math.isnan(value):
        return "not a number"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    if size >= 1e-4:
        decimals = digits - 1 - math.floor(math.log10(size))
        text = f"{value:,.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = f"{value:.{digits - 2}e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(SUPERSCRIPT)}"


def show(value: float | int | None, ucum: str | None) -> tuple[str, str]:
    """A value in a UCUM unit as (number, unit) the way a page shows them (volumes in mL)."""
    written, factor = UNITS.get(ucum or "", (ucum or "", 1.0))
    return number(None if value is None else float(value) * factor), written
