"""The serving stage's choices, named once: numeric precisions, devices, inference backends and the rules
for keeping one lesion. Torch-free, so that the run sheet, the command line and the ONNX Runtime backend
read them without importing torch."""

import re

from sonoseg.errors import SonosegError

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the device runs it fast (sonoseg.serving.device)
# The devices sonoseg computes on, as the config schema's train.device pattern admits them.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
DEVICES = "auto (CUDA when present), cpu, cuda, cuda:<index> (e.g. cuda:0)"
BACKENDS = ("torch", "onnxruntime")  # what runs a network: PyTorch, or ONNX Runtime on the exported graph


def backend_for(model: object, backend: str | None = None) -> str:
    """The backend asked for, else the one the model's name implies: ONNX Runtime for an exported graph
    (``.onnx``, any case), torch for a model.pt or a run folder."""
    if backend is not None:
        return backend
    return "onnxruntime" if str(model).lower().endswith(".onnx") else "torch"


COMPONENT_RULES = ("area", "contour_points")  # which connected component is the lesion (sonoseg.serving.infer)
# A pixel is lesion where the network's probability is above this: the mask's threshold (in sonoseg and in
# an exported model's sidecar), and the lesion whose confidence and area test-time scale selection reads.
LESION_THRESHOLD = 0.5
# What follows the threshold (sonoseg.serving.infer): keep_one keeps one connected component (the
# component rule says which) and fills its holes, the paper's rule; none keeps every pixel above the threshold.
POSTPROCESSES = ("keep_one", "none")
POSTPROCESS_CHOICE = "postprocess.json"  # the choice made on a fold's validation part, beside its seeds' models
# Test-time scale selection (sonoseg.serving.infer.scale_adaptive): the factors of the input size at
# which each image is also predicted; the most confident prediction is kept. (1.0,): off.
SCALES_HELP = (
    "test-time scale selection: also predict each image shrunk to these factors of the input size and keep "
    "the prediction whose lesion is the most confident (1.0 alone: off)"
)
SHRINK_ABOVE_HELP = (
    "with --scales, the size-aware rule: try an image smaller only when its lesion at the input size is larger "
    "than this quantile (0-1] of the training lesions' areas the model file records (1: larger than every one)"
)
SHRINK_FOUND_ABOVE_HELP = (
    "with --shrink-above, its second trigger: try every image smaller, and keep a smaller size also when the "
    "lesion found there, at the input size, is larger than this factor (>= 1) x the --shrink-above limit"
)


def shrinks(factors) -> bool:
    """Whether these test-time scales ask for anything beyond the input size (a factor below 1)."""
    return any(0 < f < 1 for f in factors)


def check_device_name(requested: str, option: str = "train.device") -> None:
    """Refuse a device that sonoseg does not compute on (``gpu``, ``mps``, a typo), naming ``option``
    (the config key or command-line option it came from) and the accepted devices. Touches no CUDA (nor
    torch), so that a command may check its option before it takes a GPU slot."""
    if not DEVICE_PATTERN.fullmatch(str(requested)):
        raise SonosegError(f"{option}: {requested!r} is not a device sonoseg computes on; one of {DEVICES}")


def smaller_factors(factors) -> list[float]:
    """The factors in (0, 1), largest first, each once: the smaller sizes test-time scale selection tries."""
    return sorted({f for f in factors if 0 < f < 1}, reverse=True)


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An error's first line, as one-line messages quote it (its type's name when it says nothing), cut to
    ``limit`` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


# What a network raises for an input size it cannot take, at a smaller size the scale selection tries: PyTorch's
# shape errors (RuntimeError: strides that do not divide the size), or the network's own check of its input
# (a ValueError, an assert). That size is left out, with a warning; the input size alone is never dropped.
SIZE_REFUSALS = (RuntimeError, ValueError, AssertionError, NotImplementedError)


def smaller_sides(size: int, smaller: list[float]) -> list[int]:
    """The sides ``smaller`` (smaller_factors) shrink a ``size``-px input to, in order, each once; a factor
    that rounds to the input size or to a side already tried adds nothing. What segment tries and what the
    export checks against torch alike."""
    return [side for side in dict.fromkeys(max(1, round(size * factor)) for factor in smaller) if side != size]
