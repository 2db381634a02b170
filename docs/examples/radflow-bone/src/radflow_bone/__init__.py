"""An example radflow plugin that writes a DICOM SEG (the plugin author's guide walks through it)."""
