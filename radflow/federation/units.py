"""Numbers as a coordinator reads them: each radiomics feature's unit as people write it (HU,
mL for volumes, mm), counts as integers, and no ``6.48286e+10``.

    unit = feature_unit("original_shape_VoxelVolume")   # Unit("mL", 0.001): mm3 shown in mL
    unit.show(1124770.0)                                 # "1,125 mL"
    unit.power(2).show(6.48286e10)                       # "64,829 mL²"
    number(6.48286e10), count(12345)                     # "6.483 (times) 10¹⁰", "12,345"

The hub sees feature names only (no catalog), so the unit comes from the pyradiomics name: the
same table as the radiomics plugin's UCUM units, written for people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_HU_FEATURES = ("Mean", "Median", "Minimum", "Maximum", "10Percentile", "90Percentile",
                "InterquartileRange", "Range", "MeanAbsoluteDeviation",
                "RobustMeanAbsoluteDeviation", "RootMeanSquared", "StandardDeviation")
_LENGTHS = ("Maximum3DDiameter", "Maximum2DDiameterSlice", "Maximum2DDiameterColumn",
            "Maximum2DDiameterRow", "MajorAxisLength", "MinorAxisLength", "LeastAxisLength")
UNITS: dict[str, tuple[str, float]] = {  # feature without its image type -> (symbol, scale)
    "shape_MeshVolume": ("mL", 1e-3), "shape_VoxelVolume": ("mL", 1e-3),  # mm³ -> mL
    "shape_SurfaceArea": ("mm²", 1.0), "shape_SurfaceVolumeRatio": ("1/mm", 1.0),
    **{f"shape_{n}": ("mm", 1.0) for n in _LENGTHS},
    **{f"firstorder_{n}": ("HU", 1.0) for n in _HU_FEATURES},
    "firstorder_Variance": ("HU²", 1.0), "firstorder_Energy": ("HU²", 1.0),
    "firstorder_TotalEnergy": ("HU²·mL", 1e-3), "firstorder_Entropy": ("bits", 1.0),
}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class Unit:
    """A display unit: its symbol ("" for none) and the factor from the stored value."""

    symbol: str = ""
    scale: float = 1.0

    def power(self, p: int) -> Unit:
        """The unit of a square (a variance, a centred sum of squares): HU -> HU², mL -> mL²."""
        if p == 1 or not self.symbol:
            return Unit(self.symbol, self.scale ** p)
        if self.symbol.endswith("²") and p == 2 and "·" not in self.symbol:
            symbol = self.symbol[:-1] + "⁴"
        elif any(c in self.symbol for c in "·/²"):
            symbol = f"({self.symbol}){str(p).translate(_SUPERSCRIPT)}"
        else:
            symbol = self.symbol + str(p).translate(_SUPERSCRIPT)
        return Unit(symbol, self.scale ** p)

    def show(self, value: Any) -> str:
        """``value`` (as stored) in this unit, e.g. "1,125 mL"; "" for None."""
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return str(value)
        text = number(value * self.scale)
        return f"{text} {self.symbol}" if self.symbol else text


def feature_unit(feature: str) -> Unit:
    """The display unit of a pyradiomics feature name (``original_shape_VoxelVolume``: mL);
    no unit for a dimensionless or unknown one."""
    rest = feature.split("_", 1)[1] if "_" in feature else feature
    symbol, scale = UNITS.get(rest, ("", 1.0))
    return Unit(symbol, scale)


def number(value: Any) -> str:
    """A number for people: 4 significant digits with thousands grouped (``1,125``,
    ``12.35``, ``0.01234``); beyond 10⁹ or under 10⁻³ in powers of ten (6.483, times sign,
    10¹⁰); integers whole."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return "not a number" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e9 or size < 1e-3:
        exponent = math.floor(math.log10(size))
        mantissa = round(value / 10 ** exponent, 3)
        if abs(mantissa) >= 10:  # 9.9996 rounds up to 10
            mantissa, exponent = round(mantissa / 10, 3), exponent + 1
        text = f"{mantissa:.3f}".rstrip("0").rstrip(".")
        return f"{text} × 10{str(exponent).translate(_SUPERSCRIPT)}"
    decimals = max(0, 3 - math.floor(math.log10(size)))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def count(value: Any) -> str:
    """A count as an integer (``12,345``); a suppressed one (None) says so."""
    if value is None:
        return "suppressed"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return number(value)
