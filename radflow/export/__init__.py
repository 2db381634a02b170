"""De-identified export of a cohort (phase 14): PS3.15 Annex E de-identification
(:mod:`radflow.export.deidentify`, rules in :mod:`radflow.export.profile`)."""
