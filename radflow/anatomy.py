"""SNOMED CT codes of the anatomy radflow's models segment (the standard's own words: a SEG's
segments carry these codes, not home-made strings)."""

from __future__ import annotations

from pydicom.sr.coding import Code

from radflow.errors import ConfigurationError

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ANATOMY: dict[str, Code] = {
    "liver": Code("10200004", "SCT", "Liver"),
    "spleen": Code("78961009", "SCT", "Spleen"),
    "kidney": Code("64033007", "SCT", "Kidney"),
    "left kidney": Code("18639004", "SCT", "Left kidney"),
    "right kidney": Code("9846003", "SCT", "Right kidney"),
    "pancreas": Code("15776009", "SCT", "Pancreas"),
    "gallbladder": Code("28231008", "SCT", "Gallbladder"),
    "stomach": Code("69695003", "SCT", "Stomach"),
    "aorta": Code("15825003", "SCT", "Aorta"),
    "lung": Code("39607008", "SCT", "Lung"),
    "heart": Code("80891009", "SCT", "Heart"),
    "urinary bladder": Code("89837001", "SCT", "Urinary bladder"),
    "prostate": Code("41216001", "SCT", "Prostate"),
    "brain": Code("12738006", "SCT", "Brain"),
    "vertebra": Code("51282000", "SCT", "Bone structure of spine"),
}


def code_for(label: str, explicit: dict[str, str] | None = None) -> Code:
    """The SNOMED CT code of a label, from an explicit ``{"code", "scheme", "meaning"}`` or by name.

    Raises:
        ConfigurationError: neither is known (the fix names the file to add codes to).
    """
    if explicit:
        return Code(explicit["code"], explicit.get("scheme", "SCT"), explicit.get("meaning", label))
    key = label.strip().lower().replace("_", " ")
    if key not in ANATOMY:
        raise ConfigurationError(
            f"no SNOMED CT code is known for label {label!r}",
            fix="give it in the model's radflow-model.json, e.g. "
                f'"labels": {{"{label}": {{"value": 1, "code": "...", "scheme": "SCT", '
                '"meaning": "..."}}')
    return ANATOMY[key]
