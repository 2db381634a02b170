"""radflow plugin: nnU-Net v2 segmentation."""
