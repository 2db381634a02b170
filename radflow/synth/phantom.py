"""An abdominal CT phantom: body, muscle wall, spine, aorta, liver, spleen and kidneys.

The contrast phase (:data:`PHASES`: non-contrast, arterial, portal-venous) sets the aorta's HU
and what iodine adds to each organ; :class:`Anatomy` sets the habitus range, an organ size scale
and an organ position shift (a site's population and breath-hold). The defaults are the mixed
set's, unchanged since before phases existed (a seed gives the same phantom).

Everything is defined in patient coordinates (millimetres, DICOM's LPS axes: x to the patient's
left, y to the back, z to the head) and sampled on the grid of an axial series. Edges carry
partial-volume mixing (each voxel gets the fraction of it inside a structure, from a first-order
distance to the surface, so thick slices blur more along z than thin ones) and Gaussian noise is
added at the end. The labelled organs give the ground-truth label volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LABELS: dict[int, str] = {1: "liver", 2: "spleen", 3: "kidney"}
AIR_HU = -1000.0


@dataclass(frozen=True)
class Ellipsoid:
    """A structure: an ellipsoid (or, with ``extruded``, an elliptic cylinder along z)."""

    name: str
    center: tuple[float, float, float]  # mm, LPS
    semi_axes: tuple[float, float, float]  # mm
    hu: float
    label: int = 0  # 0: not a labelled organ
    angle_deg: float = 0.0  # rotation about z
    extruded: bool = False


@dataclass(frozen=True)
class Phase:
    """A contrast phase: the aorta's HU and the HU that contrast adds to each organ."""

    name: str
    aorta_hu: float
    liver: float = 0.0
    spleen: float = 0.0
    kidney: float = 0.0


# Enhancement as on real scanners (about 120 kVp): the arterial phase lights up the aorta, the
# renal cortex and the spleen while the liver barely changes (it is fed mostly by the portal
# vein); the portal-venous phase enhances the liver most, the aorta less than arterial.
PHASES: dict[str, Phase] = {p.name: p for p in (
    Phase("non-contrast", 45.0),
    Phase("arterial", 320.0, liver=12.0, spleen=60.0, kidney=100.0),
    Phase("portal-venous", 180.0, liver=50.0, spleen=55.0, kidney=75.0),
)}
# The mixed set's (no site profile) contrast cases: a mild portal-venous enhancement, kept as it
# has always been so that a seed gives the same data (and the same demo model) as before.
MIXED_CONTRAST = Phase("portal-venous (mixed set)", 190.0, liver=25.0, spleen=10.0, kidney=15.0)


@dataclass(frozen=True)
class Anatomy:
    """How a population's bodies vary: habitus range (1 = average), organ size scale, organ
    shift in mm (x, y, z; LPS: z to the head, so a deeper breath-hold is a negative z)."""

    habitus: tuple[float, float] = (0.88, 1.12)
    organ_scale: float = 1.0
    organ_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


MIXED_ANATOMY = Anatomy()


@dataclass(frozen=True)
class Grid:
    """The sampling grid of an axial series (identity orientation, slices ascending in z)."""

    rows: int
    columns: int
    slices: int
    pixel_spacing: float  # mm, same along rows and columns
    slice_spacing: float  # mm
    origin: tuple[float, float, float]  # centre of the first voxel, mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.slices, self.rows, self.columns)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates along z, y and x (voxel centres)."""
        x = self.origin[0] + self.pixel_spacing * np.arange(self.columns)
        y = self.origin[1] + self.pixel_spacing * np.arange(self.rows)
        z = self.origin[2] + self.slice_spacing * np.arange(self.slices)
        return z, y, x


@dataclass(frozen=True)
class Phantom:
    """A whole phantom: its structures (painted in order) and scanner noise."""

    structures: list[Ellipsoid]
    noise_sigma: float
    extra: dict[str, float] = field(default_factory=dict)


def _fraction(shape: Ellipsoid, grid: Grid, window: tuple[slice, slice, slice]) -> np.ndarray:
    """Fraction of each voxel (within ``window``) inside ``shape``."""
    z, y, x = grid.axes()
    zs, ys, xs = z[window[0]], y[window[1]], x[window[2]]
    cx, cy, cz = shape.center
    ax, ay, az = shape.semi_axes
    theta = np.deg2rad(shape.angle_deg)
    dx = xs[None, None, :] - cx
    dy = ys[None, :, None] - cy
    u = np.cos(theta) * dx + np.sin(theta) * dy  # rotated in-plane coordinates
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    w = zs[:, None, None] - cz
    gu, gv = u / ax**2, v / ay**2
    q = (u / ax) ** 2 + (v / ay) ** 2
    gw = np.zeros_like(w) if shape.extruded else w / az**2
    if not shape.extruded:
        q = q + (w / az) ** 2
    r = np.sqrt(np.maximum(q, 1e-12))
    # gradient of r = (gu, gv, gw) / r; rotate (gu, gv) back to x, y for the voxel widths
    gx = np.cos(theta) * gu - np.sin(theta) * gv
    gy = np.sin(theta) * gu + np.cos(theta) * gv
    grad = np.sqrt(gx**2 + gy**2 + gw**2) / r
    distance = (r - 1.0) / np.maximum(grad, 1e-9)  # mm outside (+) or inside (-) the surface
    px, dz = grid.pixel_spacing, grid.slice_spacing
    width = np.sqrt((gx * px) ** 2 + (gy * px) ** 2 + (gw * dz) ** 2) / r / np.maximum(grad, 1e-9)
    return np.clip(0.5 - distance / np.maximum(width, 1e-6), 0.0, 1.0)


def _window(shape: Ellipsoid, grid: Grid) -> tuple[slice, slice, slice]:
    """Index window that holds the structure (plus a margin): work stays local on big grids."""
    reach = max(shape.semi_axes[:2]) + 2 * grid.pixel_spacing
    z, y, x = grid.axes()

    def span(axis: np.ndarray, lo: float, hi: float) -> slice:
        idx = np.nonzero((axis >= lo) & (axis <= hi))[0]
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)

    cx, cy, cz = shape.center
    zs = slice(0, grid.slices) if shape.extruded else span(
        z, cz - shape.semi_axes[2] - 2 * grid.slice_spacing, cz + shape.semi_axes[2] + 2 * grid.slice_spacing)
    return zs, span(y, cy - reach, cy + reach), span(x, cx - reach, cx + reach)


def render(phantom: Phantom, grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample the phantom: returns (HU volume as float32, label volume as uint8), both (z, y, x)."""
    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for shape in phantom.structures:
        window = _window(shape, grid)
        frac = _fraction(shape, grid, window).astype(np.float32)
        if frac.size == 0:
            continue
        frac = np.broadcast_to(frac, hu[window].shape)
        hu[window] = hu[window] * (1 - frac) + shape.hu * frac
        if shape.label:
            labels[window] = np.where(frac >= 0.5, shape.label, labels[window])
    hu += rng.normal(0.0, phantom.noise_sigma, size=grid.shape).astype(np.float32)
    return hu, labels


def abdomen(rng: np.random.Generator, phase: bool | str | Phase,
            anatomy: Anatomy = MIXED_ANATOMY,
            noise_sigma: tuple[float, float] = (12.0, 20.0)) -> Phantom:
    """A randomized abdomen: body habitus, organ sizes, positions, angles and HU vary per case.

    ``phase`` is a name in :data:`PHASES`, a :class:`Phase`, or (the mixed set) a bool:
    True for :data:`MIXED_CONTRAST`, False for non-contrast. ``noise_sigma`` is the range the
    case's noise standard deviation (HU) is drawn from.
    """
    if isinstance(phase, bool):
        phase = MIXED_CONTRAST if phase else PHASES["non-contrast"]
    elif isinstance(phase, str):
        phase = PHASES[phase]
    s = rng.uniform(*anatomy.habitus)
    body_a, body_b = 165 * s, 115 * s
    dx, dy, dz = anatomy.organ_shift_mm

    def jitter(mm: float) -> float:
        return float(rng.uniform(-mm, mm))

    def size(*axes: float) -> tuple[float, float, float]:
        k = rng.uniform(0.88, 1.12)
        return tuple(float(a * k * s * anatomy.organ_scale) for a in axes)  # type: ignore[return-value]

    kidney_hu = 150.0 + jitter(12) + phase.kidney
    structures = [
        Ellipsoid("subcutaneous fat", (0, 8, 0), (body_a, body_b, 1), -100 + jitter(10), extruded=True),
        Ellipsoid("muscle wall", (0, 8, 0), (body_a - 14, body_b - 14, 1), 50 + jitter(5), extruded=True),
        Ellipsoid("visceral fat", (0, 8, 0), (body_a - 24, body_b - 24, 1), -30 + jitter(10), extruded=True),
        Ellipsoid("vertebra", (0, 8 + 0.62 * body_b, 0), (19 * s, 17 * s, 1), 450 + jitter(40),
                  extruded=True),
        Ellipsoid("aorta", (12 * s, 8 + 0.32 * body_b, 0), (11, 11, 1), phase.aorta_hu, extruded=True),
        Ellipsoid("kidney", (-58 * s + jitter(6) + dx, 0.42 * body_b + jitter(6) + dy, -25 + jitter(8) + dz),
                  size(27, 24, 45), kidney_hu, label=3, angle_deg=20 + jitter(8)),
        Ellipsoid("kidney", (58 * s + jitter(6) + dx, 0.42 * body_b + jitter(6) + dy, -20 + jitter(8) + dz),
                  size(27, 24, 45), kidney_hu, label=3, angle_deg=-20 + jitter(8)),
        Ellipsoid("spleen", (92 * s + jitter(5) + dx, 0.18 * body_b + jitter(5) + dy, 45 + jitter(8) + dz),
                  size(30, 44, 48), 45 + jitter(5) + phase.spleen, label=2,
                  angle_deg=-35 + jitter(10)),
        Ellipsoid("liver", (-58 * s + jitter(5) + dx, -0.10 * body_b + jitter(5) + dy, 25 + jitter(8) + dz),
                  size(72, 56, 70), 60 + jitter(5) + phase.liver, label=1,
                  angle_deg=15 + jitter(10)),
    ]
    return Phantom(structures, noise_sigma=float(rng.uniform(*noise_sigma)), extra={"habitus": s})
