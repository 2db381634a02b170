"""Server-side rendering of a series and its segmentations for the web app: axial slices as
windowed greyscale PNGs, and each SEG as a label map aligned to the series' slices (a PNG whose
pixel value is the segment number), cached per series and SEG.

The browser colours the label map itself (per-segment toggle and opacity, the editor's brush and
eraser); what it sends back is a label map of the same form.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radflow.errors import DicomInputError

# Window presets: name -> (centre, width) in HU.
PRESETS = {"soft tissue": (40, 400), "liver": (60, 160), "lung": (-600, 1500),
           "bone": (400, 1800)}
COLOURS = [(230, 80, 60), (60, 180, 75), (70, 130, 230), (240, 200, 40), (170, 90, 200)]


@dataclass
class Stack:
    """A series as slices: HU (z, y, x), the source datasets and their SOP UIDs in z order."""

    series_uid: str
    hu: np.ndarray
    datasets: list[Any]
    sop_uids: list[str]
    spacing: tuple[float, float, float]  # z, y, x in mm


@dataclass
class Labels:
    """A SEG on a stack: segment numbers per voxel, and the segments."""

    seg_uid: str
    sop_uid: str
    labels: np.ndarray
    segments: list[dict[str, Any]] = field(default_factory=list)
    dataset: Any = None


def shared(request: Any) -> Renderer:
    """The web app's one renderer (the worklist's case pages and the series viewer share its
    cache)."""
    state = request.app.state
    if getattr(state, "renderer", None) is None:
        state.renderer = Renderer(state.ctx.orthanc_client())
    return state.renderer


class Renderer:
    """Stacks and label maps of one site's Orthanc, a few kept in memory (LRU)."""

    def __init__(self, orthanc: Any, budget_mb: int = 1024) -> None:
        self.orthanc = orthanc
        self.budget = budget_mb * 2**20  # what the cache may hold, in bytes of arrays
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: tuple[str, str], make: Any) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            held = sum(map(_size, self._cache.values()))
            while held > self.budget and len(self._cache) > 1:
                held -= _size(self._cache.popitem(last=False)[1])
        return value

    def cached(self, kind: str, key: str) -> bool:
        """Whether ``(kind, key)`` is in the cache (the benchmark's cold and warm)."""
        with self._lock:
            return (kind, key) in self._cache

    def stack(self, series_uid: str) -> Stack:
        def make() -> Stack:
            import SimpleITK as sitk

            from radflow.imaging import load_volume

            volume = load_volume(self.orthanc, self.orthanc.series_by_uid(series_uid))
            hu = sitk.GetArrayFromImage(volume.image).astype(np.int16)
            sx, sy, sz = volume.image.GetSpacing()
            return Stack(series_uid, hu, volume.datasets,
                         [str(ds.SOPInstanceUID) for ds in volume.datasets], (sz, sy, sx))
        return self._cached(("stack", series_uid), make)

    def seg_dataset(self, seg_uid: str) -> Any:
        def make() -> Any:
            import pydicom

            found = self.orthanc.series_by_uid(seg_uid)
            instance = self.orthanc.series_instances(found.orthanc_id)[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(self.orthanc.instance_file(instance)))
            if ds.get("Modality") != "SEG":
                raise DicomInputError(f"series {seg_uid} is {ds.get('Modality')}, not a SEG",
                                      fix="pick a segmentation series")
            return ds
        return self._cached(("segds", seg_uid), make)

    def labels(self, seg_uid: str, series_uid: str) -> Labels:
        """The SEG ``seg_uid`` as segment numbers on the slices of ``series_uid``."""
        def make() -> Labels:
            import highdicom as hd

            stack = self.stack(series_uid)
            ds = self.seg_dataset(seg_uid)
            referenced = [s.SeriesInstanceUID for s in ds.get("ReferencedSeriesSequence", [])]
            if series_uid not in referenced:
                raise DicomInputError(f"SEG {seg_uid} does not reference series {series_uid}",
                                      fix="pick a SEG made on this series")
            seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
            numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
            labels = np.zeros(stack.hu.shape, dtype=np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                referenced_sops = {uid for _, _, uid in seg.get_source_image_uids()}
                present = [k for k, uid in enumerate(stack.sop_uids) if uid in referenced_sops]
                if present:
                    binary = seg.get_pixels_by_source_instance(
                        [stack.sop_uids[k] for k in present], segment_numbers=numbers,
                        assert_missing_frames_are_empty=True, skip_overlap_checks=True)
                    for i, number in enumerate(numbers):
                        part = labels[present]
                        part[binary[..., i] > 0] = number
                        labels[present] = part
            segments = [{"number": int(s.SegmentNumber), "label": str(s.SegmentLabel),
                         "colour": colour(s), "voxels": int((labels == int(s.SegmentNumber)).sum())}
                        for s in ds.SegmentSequence]
            return Labels(seg_uid, str(ds.SOPInstanceUID), labels, segments, ds)
        return self._cached(("labels", f"{seg_uid}/{series_uid}"), make)

    # One slice at a time (the series viewer): the first slice shows after one instance is
    # read, not the whole series. ``order`` is the series' instances in slice order, as
    # (Orthanc instance id, SOP Instance UID) pairs: the catalog keeps it (``position_z``).

    def slice_hu(self, series_uid: str, order: list[tuple[str, str]], z: int) -> np.ndarray:
        """Slice ``z`` in HU: from the whole stack when it is loaded, else from its instance."""
        with self._lock:
            stack = self._cache.get(("stack", series_uid))
        if stack is not None:
            return stack.hu[z]

        def make() -> np.ndarray:
            import pydicom

            data = self.orthanc.instance_file(order[z][0])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(io.BytesIO(data))
                    pixels = ds.pixel_array.astype(np.float32)
            except Exception as exc:  # pydicom raises many kinds on undecodable pixel data
                raise DicomInputError(f"slice {z} of series {series_uid} cannot be decoded: "
                                      f"{exc}", fix="check its transfer syntax (`radflow "
                                                    "catalog findings`)") from exc
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            if pixels.ndim != 2:
                raise DicomInputError(f"slice {z} of series {series_uid} is not one 2D frame",
                                      fix="open multi-frame objects in OHIF or 3D Slicer")
            return np.clip(pixels * slope + intercept, -32768, 32767).astype(np.int16)
        return self._cached(("slice", f"{series_uid}/{z}"), make)

    def segmentation(self, seg_uid: str) -> Any:
        """The SEG as a highdicom Segmentation (its frame index built once)."""
        def make() -> Any:
            import highdicom as hd

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return hd.seg.Segmentation.from_dataset(self.seg_dataset(seg_uid), copy=False)
        return self._cached(("seg", seg_uid), make)

    def label_slice(self, seg_uid: str, series_uid: str, sop_uid: str, z: int,
                    shape: tuple[int, int]) -> np.ndarray:
        """Slice ``z`` (SOP Instance ``sop_uid``) of the SEG as segment numbers: from the whole
        label map when it is loaded, else from the SEG's frames of that one source image."""
        with self._lock:
            whole = self._cache.get(("labels", f"{seg_uid}/{series_uid}"))
        if whole is not None:
            return whole.labels[z]

        def make() -> np.ndarray:
            seg = self.segmentation(seg_uid)
            ds = self.seg_dataset(seg_uid)
            referenced = [s.SeriesInstanceUID for s in ds.get("ReferencedSeriesSequence", [])]
            if series_uid not in referenced:
                raise DicomInputError(f"SEG {seg_uid} does not reference series {series_uid}",
                                      fix="pick a SEG made on this series")
            numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
            out = np.zeros(shape, dtype=np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if sop_uid not in self._seg_sources(seg_uid):
                    return out
                binary = seg.get_pixels_by_source_instance(
                    [sop_uid], segment_numbers=numbers, assert_missing_frames_are_empty=True,
                    skip_overlap_checks=True)[0]
            if binary.shape[:2] != shape:
                raise DicomInputError(f"SEG {seg_uid} frames are {binary.shape[1]}x"
                                      f"{binary.shape[0]}, the series {shape[1]}x{shape[0]}",
                                      fix="open it in 3D Slicer, which resamples")
            for i, number in enumerate(numbers):
                out[binary[..., i] > 0] = number
            return out
        return self._cached(("label", f"{seg_uid}/{series_uid}/{z}"), make)

    def _seg_sources(self, seg_uid: str) -> set[str]:
        def make() -> set[str]:
            return {uid for _, _, uid in self.segmentation(seg_uid).get_source_image_uids()}
        return self._cached(("segsrc", seg_uid), make)

    def forget(self, seg_uid: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if seg_uid in k[1]]:
                self._cache.pop(key)


def _size(value: Any) -> int:
    """Bytes an entry of the cache holds (its arrays; a SEG dataset counts its pixel data)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Stack):
        return value.hu.nbytes * 2  # and the datasets' pixel data
    if isinstance(value, Labels):
        return value.labels.nbytes
    pixel_data = getattr(value, "PixelData", None) if hasattr(value, "SOPInstanceUID") else None
    return len(pixel_data) if isinstance(pixel_data, bytes) else 4096


def colour(segment: Any) -> list[int]:
    """A segment's display colour: its recommended CIELab colour (as 3D Slicer and OHIF show
    it), else radflow's palette."""
    lab = segment.get("RecommendedDisplayCIELabValue")
    if lab is None or len(lab) != 3:
        return list(COLOURS[(int(segment.SegmentNumber) - 1) % len(COLOURS)])
    return lab_to_rgb(*(int(v) for v in lab))


def lab_to_rgb(l16: int, a16: int, b16: int) -> list[int]:
    """DICOM's scaled CIELab (0-65535) to sRGB (D65 white)."""
    lightness = l16 * 100.0 / 65535.0
    a, b = a16 * 255.0 / 65535.0 - 128.0, b16 * 255.0 / 65535.0 - 128.0
    fy = (lightness + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def inv(t: float) -> float:
        return t ** 3 if t ** 3 > 0.008856 else (t - 16.0 / 116.0) / 7.787

    x, y, z = 0.95047 * inv(fx), 1.0 * inv(fy), 1.08883 * inv(fz)
    linear = (3.2406 * x - 1.5372 * y - 0.4986 * z, -0.9689 * x + 1.8758 * y + 0.0415 * z,
              0.0557 * x - 0.2040 * y + 1.0570 * z)

    def gamma(c: float) -> int:
        c = min(max(c, 0.0), 1.0)
        c = 1.055 * c ** (1 / 2.4) - 0.055 if c > 0.0031308 else 12.92 * c
        return round(c * 255)

    return [gamma(c) for c in linear]


def window(name: str | None, centre: float | None, width: float | None) -> tuple[float, float]:
    """The window to render: explicit centre/width, else a named preset (soft tissue)."""
    if centre is not None and width is not None:
        if not (1 <= width <= 10000 and -5000 <= centre <= 5000):
            raise DicomInputError(f"window {centre}/{width} is out of range",
                                  fix="width 1-10000 HU, centre -5000-5000 HU")
        return float(centre), float(width)
    return PRESETS.get(name or "soft tissue", PRESETS["soft tissue"])


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()


def slice_png(stack: Stack, z: int, centre: float, width: float) -> bytes:
    """Slice ``z`` of the stack, windowed, as an 8-bit greyscale PNG."""
    lo = centre - width / 2.0
    grey = np.clip((stack.hu[z].astype(np.float32) - lo) / width * 255.0, 0, 255)
    return png(grey.astype(np.uint8))


def label_png(labels: Labels, z: int) -> bytes:
    """Slice ``z`` of a label map as a PNG whose pixel values are segment numbers."""
    return png(labels.labels[z])


def decode_label_png(data: bytes, shape: tuple[int, int], allowed: set[int]) -> np.ndarray:
    """A label slice the browser sent (PNG, segment number in the red channel), checked.

    Raises:
        DicomInputError: not a PNG of the slice's size, or values that are no segment.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DicomInputError("an edited slice is not a PNG image",
                              fix="save again from the case page") from exc
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != shape:
        raise DicomInputError(f"an edited slice is {array.shape[1]}x{array.shape[0]}, the series "
                              f"is {shape[1]}x{shape[0]}", fix="save again from the case page")
    unknown = sorted(set(np.unique(array).tolist()) - allowed - {0})
    if unknown:
        raise DicomInputError(f"an edited slice holds label values {unknown[:5]} that are no "
                              "segment of the SEG", fix="save again from the case page")
    return array.astype(np.uint8)
