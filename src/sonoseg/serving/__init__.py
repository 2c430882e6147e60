"""The serving stage: the model file (format, safe loading, atomic save), device and precision,
inference and `segment` (one model or a run folder's ensemble), the ONNX export and the cost of a
network. Nothing here imports the training stage: a predictor reads a model file, never a trainer.

From Python, ``sonoseg.serving.Segmenter(model)(image)`` is the mask `sonoseg segment` writes for an image
(docs/deploy.md, "From Python")."""

__all__ = ["Segmenter"]


def __getattr__(name: str):
    # Imported when asked for: the stage's light modules (options, the sidecar) are read without the
    # inference stack (pandas, SciPy) that Segmenter brings.
    if name == "Segmenter":
        from sonoseg.serving.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
