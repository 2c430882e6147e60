"""Input intensity normalization per image, as a wrapper around a built-in network (design experiment)."""
import torch
from torch import nn
from sonoseg.networks import models


class PerImageInput(nn.Module):
    def __init__(self, network: nn.Module, mode: str):
        super().__init__()
        self.network, self.mode = network, mode

    def forward(self, x):
        n, c, h, w = x.shape
        if self.mode == "zscore":
            mean = x.mean((1, 2, 3), keepdim=True)
            std = x.std((1, 2, 3), keepdim=True).clamp_min(1e-3)
            x = (x - mean) / std * 0.2 + 0.5
        elif self.mode == "quantile":  # each pixel -> its (tie-averaged) quantile in the image: any monotonic display curve removed
            flat = x.mean(1).flatten(1)
            ordered = flat.sort(1).values
            left = torch.searchsorted(ordered, flat)
            right = torch.searchsorted(ordered, flat, right=True)
            q = ((left + right).to(x.dtype) / (2 * h * w)).view(n, 1, h, w)
            x = q.expand(n, c, h, w).contiguous()
        return self.network(x)


def _wrap(name, mode):
    return lambda: PerImageInput(models.build(name), mode)


for _net in ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"):
    for _mode in ("zscore", "quantile"):
        globals()[f"{_mode}__{_net}"] = _wrap(_net, _mode)
