"""The data stage: a dataset's layouts and its manifest (every file accounted for), near-duplicate
images, the phantom, the coloured marks, the patient-level split, the resized caches and the data's
fingerprint. ``from sonoseg import data`` gives the manifest's entry points."""

from sonoseg.data.manifest import MANIFEST_COLUMNS, included, ingest, read_manifest

__all__ = ["MANIFEST_COLUMNS", "included", "ingest", "read_manifest"]
