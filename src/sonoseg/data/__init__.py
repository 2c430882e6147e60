"""The data stage: a dataset's layouts and its manifest (every file accounted for), near-duplicate
images, the phantom, the coloured marks, the patient-level split, the resized caches and the data's
fingerprint. ``from sonoseg import data`` gives the manifest's entry points (ingest, included,
read_manifest, MANIFEST_COLUMNS), loaded on first use: importing the stage's light modules
(sonoseg.data.options) does not import OpenCV."""

__all__ = ["MANIFEST_COLUMNS", "included", "ingest", "read_manifest"]


def __getattr__(name: str):
    if name in __all__:
        from sonoseg.data import manifest

        return getattr(manifest, name)
    raise AttributeError(f"module 'sonoseg.data' has no attribute {name!r}")
