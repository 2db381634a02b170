"""A small PNG of a segmentation over its image (for the flow's summary artifact)."""

from __future__ import annotations

import base64
import io

import numpy as np

COLOURS = [(230, 80, 60), (60, 180, 75), (70, 130, 230), (240, 200, 40), (170, 90, 200)]


def segment_colour(label_value: int) -> tuple[int, int, int]:
    """The RGB colour of a label in radflow's overlays (also the SEG's recommended display
    colour, so 3D Slicer and OHIF show the same colours)."""
    return COLOURS[(int(label_value) - 1) % len(COLOURS)]


def overlay_png(volume: np.ndarray, labels: np.ndarray, size: int = 160) -> str:
    """Base64 PNG of the axial slice with the most labelled voxels, CT window 40/400."""
    from PIL import Image

    counts = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    k = int(np.argmax(counts)) if counts.any() else labels.shape[0] // 2
    grey = np.clip((volume[k].astype(np.float32) + 160.0) / 400.0 * 255.0, 0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value in np.unique(labels[k]):
        if value == 0:
            continue
        mask = labels[k] == value
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(segment_colour(value))
    image = Image.fromarray(rgb.astype(np.uint8)).resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
