"""A model ready to serve (Predictor: how to run a batch, how to prepare a new image for it) and the torch
backend that makes one of a model.pt. torch is imported when a model.pt is loaded, not with this module:
sonoseg.serving.infer serves an exported graph with ONNX Runtime (onnxruntime_predictor) without it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sonoseg.data.preprocess import remove_marks, resize_image
from sonoseg.errors import SonosegError
from sonoseg.serving.modelio import images_to_array, images_to_tensor, lesion_areas_at, load_model

RunBatch = Callable[[np.ndarray], np.ndarray]  # float32 (N, 3, S, S) RGB in [0, 1] -> probability (N, S, S)


@dataclass
class Predictor:
    """A model ready to serve: how to run a batch, and how to resize a new image for it (the input
    size and interpolation it was trained with, unless the user asked for another size)."""

    run: RunBatch
    size: int | None
    interpolation: str
    marks: str = "keep"
    provenance: dict | None = None  # the data it was trained on, the sonoseg that trained it
    # Its training images' lesion areas in input pixels (the model file's lesion_areas, scaled to another
    # input size); None for a file from before they were recorded, or an exported graph.
    lesion_areas: tuple[float, ...] | None = None
    network: str | None = None  # the catalog name (several, joined by "+", for an ensemble that mixes them)
    # uint8 RGB images (N, H, W, 3) -> the run's input; the torch backend's through torch (torch_predictor).
    to_input: Callable[[np.ndarray], np.ndarray] = images_to_array

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """One RGB uint8 image -> a batch of one, its marks treated and resized as the model's training
        data was."""
        rgb, _ = remove_marks(rgb, self.marks)
        return self.to_input(resize_image(rgb, self.size, self.interpolation)[None])


def one_channel(probabilities: np.ndarray, model_path: str | Path) -> np.ndarray:
    """The lesion probability per pixel, (batch, height, width), from a network's (batch, 1, height,
    width). Any other shape (a network of the user's own with two channels, say) is refused, not read
    by its first channel: training refuses such networks, but a model file may come from elsewhere."""
    if probabilities.ndim != 4 or probabilities.shape[1] != 1:
        raise SonosegError(
            f"{model_path}: the network's output is shaped {probabilities.shape}, not (batch, 1, height, width)"
        )
    return probabilities[:, 0]


def torch_predictor(model_path: str | Path, device: str = "auto", size: int | None = None) -> Predictor:
    """A model.pt; ``size`` overrides the input size it was trained at."""
    import torch

    from sonoseg.serving.device import select_device
    from sonoseg.serving.probability_model import ProbabilityModel

    dev = select_device(device)
    model, saved = load_model(model_path, dev)
    wrapped = ProbabilityModel(model, saved.get("normalization")).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return one_channel(wrapped(torch.from_numpy(batch).to(dev)).cpu().numpy(), model_path)

    def to_input(images: np.ndarray) -> np.ndarray:
        """In the memory layout torch chooses its kernels by, as the backend always prepared images."""
        return images_to_tensor(images).numpy()

    return Predictor(
        run,
        size or saved.get("input_size"),
        saved["input_interpolation"],
        saved["input_marks"],
        saved.get("provenance"),
        lesion_areas_at(saved, size),
        saved.get("network"),
        to_input,
    )
