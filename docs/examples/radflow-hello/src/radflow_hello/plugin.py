"""A minimal radflow plugin: one task, typed input and output, declared resources.

Importing this module is cheap: numpy and SimpleITK are imported inside the task.
"""

from __future__ import annotations

from radflow.sdk import Plugin, Resources, SeriesRef, load_volume, site_runtime, task


@task(name="intensity-stats", resources=Resources(cpus=1, memory_gb=0.5))
def intensity_stats(series: SeriesRef, site: str | None = None) -> dict[str, float]:
    """Mean, minimum and maximum of a series' voxels (HU for CT), and its voxel count."""
    import numpy as np
    import SimpleITK as sitk

    volume = load_volume(site_runtime(site).orthanc, series)
    voxels = sitk.GetArrayFromImage(volume.image).astype(np.float64)
    return {"mean": float(voxels.mean()), "min": float(voxels.min()),
            "max": float(voxels.max()), "voxels": int(voxels.size)}


plugin = Plugin(name="hello", version="0.1.0",
                description="Intensity statistics of a series (a minimal example plugin)",
                tasks=(intensity_stats,))
