"""Write a synthetic HU volume as a DICOM CT Image Storage series (one file per slice).

The files carry the Patient, General Study, Patient Study, General Series, Frame of Reference,
General Equipment, General Image, Image Plane, Image Pixel, Contrast/Bolus (when contrast was
given), CT Image, VOI LUT and SOP Common modules, and pass ``dciodvfy`` without errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from radflow.synth.phantom import Grid
from radflow.synth.profiles import CaseSpec

INSTITUTION = "radflow Synthetic Hospital"


def _da(d) -> str:
    return d.strftime("%Y%m%d")


def _tm(t) -> str:
    return t.strftime("%H%M%S")


def stored_values(hu: np.ndarray, spec: CaseSpec) -> np.ndarray:
    """HU -> stored pixel values for the vendor's representation (slope 1)."""
    v = spec.vendor
    stored = np.rint(hu - v.intercept)
    if v.pixel_representation:
        lo, hi = -(2 ** (v.bits_stored - 1)), 2 ** (v.bits_stored - 1) - 1
        return np.clip(stored, lo, hi).astype(np.int16)
    return np.clip(stored, 0, 2**v.bits_stored - 1).astype(np.uint16)


def series_dataset(spec: CaseSpec, grid: Grid) -> Dataset:
    """Attributes shared by every slice of the series."""
    v = spec.vendor
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    # Patient and Patient Study
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = _da(spec.birth_date)
    ds.PatientSex = spec.sex
    ds.PatientAge = f"{spec.age_years:03d}Y"
    ds.PatientWeight = f"{spec.weight_kg:.1f}"
    ds.PatientSize = f"{spec.height_m:.2f}"
    # General Study
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = _da(spec.study_date)
    ds.StudyTime = _tm(spec.study_time)
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"{spec.index + 1}"
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = "CT ABDOMEN WITH CONTRAST" if spec.contrast else "CT ABDOMEN"
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.ProtocolName = spec.protocol_name
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    # Frame of Reference
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = v.manufacturer
    ds.ManufacturerModelName = v.model
    ds.SoftwareVersions = v.software
    ds.StationName = spec.station_name
    ds.InstitutionName = INSTITUTION
    # General Image / CT Image
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.KVP = f"{spec.kvp:g}"
    ds.XRayTubeCurrent = spec.tube_current_ma
    ds.ExposureTime = 500
    ds.ConvolutionKernel = v.kernel
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{grid.columns * grid.pixel_spacing:.1f}"
    ds.GantryDetectorTilt = "0"
    ds.RotationDirection = "CW"
    ds.ScanOptions = "HELICAL MODE"
    ds.RescaleIntercept = f"{v.intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    # Contrast/Bolus (only when contrast was given)
    if spec.contrast:
        ds.ContrastBolusAgent = spec.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "100"
    # Image Plane
    ds.PixelSpacing = [f"{grid.pixel_spacing:.6g}", f"{grid.pixel_spacing:.6g}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceThickness = f"{spec.slice_thickness:g}"
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.BitsAllocated = 16
    ds.BitsStored = v.bits_stored
    ds.HighBit = v.bits_stored - 1
    ds.PixelRepresentation = v.pixel_representation
    # VOI LUT
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def write_series(spec: CaseSpec, grid: Grid, hu: np.ndarray, folder: Path) -> list[Path]:
    """Write ``hu`` (z, y, x) as one CT file per slice into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    base = series_dataset(spec, grid)
    pixels = stored_values(hu, spec)
    paths = []
    for k in range(grid.slices):
        ds = Dataset()
        ds.update(base)
        number = k + 1
        ds.SOPInstanceUID = spec.sop_uid(number)
        ds.InstanceNumber = number
        z = grid.origin[2] + k * grid.slice_spacing
        ds.ImagePositionPatient = [f"{grid.origin[0]:.4f}", f"{grid.origin[1]:.4f}", f"{z:.4f}"]
        ds.SliceLocation = f"{z:.4f}"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = folder / f"IM{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
