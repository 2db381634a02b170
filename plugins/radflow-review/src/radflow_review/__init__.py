"""radflow plugin: review steps (suspend a case run for a clinician's typed decision)."""
