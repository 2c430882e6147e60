"""The wrapper that turns a network's logits into the probability every consumer serves (prediction,
`segment` in torch, export, the cost table): the torch side of a model file, kept apart from
sonoseg.serving.modelio so that reading run folders and recorded choices imports no torch."""

from __future__ import annotations

import torch
from torch import nn

from sonoseg.data.preprocess import normalize_tensor


class ProbabilityModel(nn.Module):
    """[0, 1] RGB -> normalization (if the model was trained with one) -> network -> sigmoid."""

    def __init__(self, network: nn.Module, normalization: dict | None):
        super().__init__()
        self.network = network
        self.normalization = normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(normalize_tensor(x, self.normalization)))
