"""radflow plugin: pyradiomics features as DICOM SR."""
