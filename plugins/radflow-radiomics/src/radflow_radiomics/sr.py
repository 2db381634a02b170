"""Feature values as a DICOM SR Measurement Report (TID 1500), written with highdicom: one
volumetric ROI group per segment, referencing the SEG segment and the source series; features
coded with IBSI codes, units in UCUM (features without an IBSI code are not written: see
features.py)."""

from __future__ import annotations

from typing import Any

from radflow.sdk import FeatureTable, derived_uid
from radflow_radiomics.features import SCHEMES, UNIT_MEANINGS, feature_code

SR_SERIES_NUMBER = 9002


def write_sr(source: list[Any], seg: Any, table: FeatureTable, params_version: str,
             pyradiomics_version: str, *, series_uid: str, instance_uid: str,
             uid: Any) -> Any:
    """Build the Comprehensive 3D SR of ``table`` (rows for the segments of ``seg``)."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from radflow import __version__

    algorithm = hd.sr.AlgorithmIdentification(name="pyradiomics", version=pyradiomics_version,
                                              parameters={"radflow-params": params_version})
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("radflow-radiomics-device"), name="radflow-radiomics",
            manufacturer_name="radflow", model_name=f"pyradiomics {pyradiomics_version}"))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    described = {int(d.SegmentNumber): d for d in seg.SegmentSequence}
    groups, schemes = [], set()
    for number in sorted({r["segment_number"] for r in table.rows}):
        rows = [r for r in table.rows if r["segment_number"] == number]
        description = described[number]
        anatomy = description.SegmentedPropertyTypeCodeSequence[0]
        measurements = []
        for r in rows:
            code = feature_code(r["feature"])
            if code is None:  # no standard code: in the feature table only (see features.py)
                continue
            schemes.add(code.scheme)
            measurements.append(hd.sr.Measurement(
                name=hd.sr.CodedConcept(code.value, code.scheme, code.meaning),
                value=r["value"] + code.offset,
                unit=hd.sr.CodedConcept(r["unit"], "UCUM", UNIT_MEANINGS.get(r["unit"], r["unit"])),
                algorithm_id=algorithm))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=uid("roi", str(number)), identifier=f"{description.SegmentLabel} radiomics"),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(source[0].SeriesInstanceUID)),
            finding_type=Code(anatomy.CodeValue, anatomy.CodingSchemeDesignator, anatomy.CodeMeaning),
            algorithm_id=algorithm,
            measurements=measurements))
    modality = str(source[0].get("Modality", "CT"))
    procedure = codes.LN.CTUnspecifiedBodyRegion if modality == "CT" else Code("363679005", "SCT", "Imaging")
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *source],
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer="radflow",
        is_complete=True,
        series_description=f"SR radiomics {params_version}"[:64],
        software_versions=f"radflow {__version__} pyradiomics {pyradiomics_version}"[:64],
    )
    declared = []
    for scheme in sorted(schemes):
        item = Dataset()
        item.CodingSchemeDesignator = scheme
        item.CodingSchemeName = SCHEMES[scheme]["name"]
        item.CodingSchemeResponsibleOrganization = SCHEMES[scheme]["organization"][:64]
        declared.append(item)
    sr.CodingSchemeIdentificationSequence = declared
    return sr


def read_measurements(sr: Any) -> dict[tuple[str, str], float]:
    """(segment label, ``SCHEME:code``) -> value, read back from an SR (for checks and tests)."""
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    values = {}
    for group in report.content.get_volumetric_roi_measurement_groups():
        label = str(group.tracking_identifier).removesuffix(" radiomics")
        for measurement in group.get_measurements():
            name = measurement.name
            values[(label, f"{name.scheme_designator}:{name.value}")] = float(measurement.value)
    return values
