"""The data stage's choices, named once: how images are resized, what happens to coloured marks, the
parts of a split. OpenCV-free, so that the command line and the run sheet read them without importing
it (sonoseg.data.preprocess maps each interpolation to its OpenCV flag)."""

INTERPOLATIONS = ("bilinear", "area")  # preprocess.interpolation; the first is the default
DEFAULT_INTERPOLATION = INTERPOLATIONS[0]  # what a model file or cache written before the option was made with
MARKS = ("keep", "inpaint")  # preprocess.marks: coloured overlays (calipers, Doppler boxes, text) kept or inpainted
PARTS = ("train", "val", "test")  # the parts of a split
# A cache's images may also be the phantom's same images rendered without their calipers: only the
# reliance runs read such a cache (a model trained with the marks kept, tested without them).
UNMARKED = "unmarked"
CACHE_MARKS = (*MARKS, UNMARKED)
# A dataset's config keys (the dataset section, or an external_datasets entry) -> sonoseg.data.ingest's
# parameters: `sonoseg ingest --options` and the planning's layout check read them through this one map.
INGEST_SETTINGS = {
    "on_bad_sample": "on_bad_sample",
    "csv": "dataset_csv",
    "include_normal": "include_normal",
    "pixel_spacing": "pixel_spacing",
    "near_duplicate_distance": "near_duplicate_distance",
    "near_duplicate_similarity": "near_duplicate_similarity",
}


def ingest_parameters(options: dict) -> dict:
    """A dataset's config entry as sonoseg.data.ingest's keyword arguments; a key left out keeps ingest's
    default (the schema's defaults, which a test holds equal to those)."""
    return {parameter: options[key] for key, parameter in INGEST_SETTINGS.items() if key in options}


# A BUSI normal scan's reason in the manifest when include_normal is false: an exclusion the user asked
# for, which the generalization table counts apart from the problems.
NORMAL_LEFT_OUT = "normal image left out (include_normal: false)"
