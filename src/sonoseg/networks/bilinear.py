"""Bilinear resizing for the networks, fast where training asks for deterministic kernels on CUDA.

Training on CUDA turns on ``torch.use_deterministic_algorithms`` so that a rerun is bit-identical
(``serving.device.make_deterministic``). PyTorch then computes ``F.interpolate(mode="bilinear")``
through a decomposition whose backward is a sorted ``index_put``: on one H200 that scatter took 68 %
of U-net's GPU time and held its training step at 125 images/s against 409 with deterministic
convolutions alone (docs/performance.md, "GPU"). Bilinear resizing is separable, ``y = A_h x A_w^T``
with fixed interpolation matrices, so its gradient is two matrix products, ``A_h^T g A_w``:
deterministic, and cheap at these sizes. ``resize`` uses that path on CUDA under deterministic
algorithms and ``F.interpolate`` everywhere else, so CPU results are bit for bit what they were.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


def resize(
    x: torch.Tensor,
    *,
    size: tuple[int, int] | torch.Size | None = None,
    scale_factor: float | None = None,
    align_corners: bool,
) -> torch.Tensor:
    """``F.interpolate(x, size=..., scale_factor=..., mode="bilinear", align_corners=...)``, with a
    deterministic separable backward on CUDA when deterministic algorithms are on."""
    if separable_wanted(x):
        return separable_resize(x, size=size, scale_factor=scale_factor, align_corners=align_corners)
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode="bilinear", align_corners=align_corners)


def separable_wanted(x: torch.Tensor) -> bool:
    """The separable path where PyTorch's own would scatter: CUDA under deterministic algorithms."""
    return x.is_cuda and torch.are_deterministic_algorithms_enabled()


class Upsample(nn.Module):
    """``nn.Upsample(scale_factor=..., mode="bilinear")`` through ``resize`` (no parameters, so a
    model's state_dict is the same either way)."""

    def __init__(self, scale_factor: float, align_corners: bool = False):
        super().__init__()
        self.scale_factor = scale_factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, scale_factor=self.scale_factor, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode='bilinear', align_corners={self.align_corners}"


def separable_resize(
    x: torch.Tensor,
    *,
    size: tuple[int, int] | torch.Size | None = None,
    scale_factor: float | None = None,
    align_corners: bool,
) -> torch.Tensor:
    """Bilinear resizing of an (N, C, H, W) tensor with the native forward kernel and the separable
    backward, on any device (the tests run it on the CPU)."""
    if (size is None) == (scale_factor is None):
        raise ValueError("resize: give exactly one of size and scale_factor")
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scales = (None, None)
    else:
        out_h, out_w = int(in_h * scale_factor), int(in_w * scale_factor)
        scales = (float(scale_factor), float(scale_factor))
    return _SeparableBilinear.apply(x, (out_h, out_w), align_corners, scales)


class _SeparableBilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out_size, align_corners, scales):
        ctx.geometry = (tuple(x.shape[-2:]), out_size, align_corners, scales)
        ctx.input_dtype = x.dtype
        # The native kernel: its forward gathers, so it is deterministic; only the backward scatters.
        return torch._C._nn.upsample_bilinear2d(x, out_size, align_corners, *scales)

    @staticmethod
    def backward(ctx, grad_out):
        (in_h, in_w), (out_h, out_w), align_corners, (scale_h, scale_w) = ctx.geometry
        a_h = interpolation_matrix(in_h, out_h, align_corners, scale_h, grad_out.device)
        a_w = interpolation_matrix(in_w, out_w, align_corners, scale_w, grad_out.device)
        # grad_x = A_h^T g A_w, accumulated in fp32 whatever the autocast dtype of g
        grad_in = torch.matmul(a_h.t(), torch.matmul(grad_out.float(), a_w))
        return grad_in.to(ctx.input_dtype), None, None, None


@lru_cache(maxsize=256)
def interpolation_matrix(
    size_in: int, size_out: int, align_corners: bool, scale: float | None, device: torch.device
) -> torch.Tensor:
    """The (size_out, size_in) matrix of PyTorch's 1-D linear interpolation, read off the library's
    own kernel (the response to each unit impulse), so its coordinate rule is PyTorch's, not a copy;
    kept on the device, so a training step copies nothing to it."""
    impulses = torch.eye(size_in, dtype=torch.float64).unsqueeze(0)  # (1, size_in channels, size_in)
    if scale is None:
        responses = F.interpolate(impulses, size=size_out, mode="linear", align_corners=align_corners)
    else:
        responses = F.interpolate(impulses, scale_factor=scale, mode="linear", align_corners=align_corners)
    return responses[0].t().float().contiguous().to(device)
