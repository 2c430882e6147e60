"""Ultrasound-specific intensity augmentation (recipe ``ultrasound_augment``): what changes between
scanners, presets and simulators while the anatomy stays — time-gain compensation and attenuation
(a gain that varies with depth), the point-spread function (axial and lateral blur), speckle and
electronic noise, the log-compression curve (gamma and contrast), and acoustic shadows below
strong reflectors. The geometric augmentation (sonoseg.training.train.draw_augmentation, the paper's)
is applied after it, so depth is still the vertical axis here.

Written in torch rather than taken from a per-image library (usaugment, albumentations, MONAI):
training keeps its images on the device and augments a batch at a time (sonoseg.training.train), and
every draw comes from the training's seeded generator, so a resumed training is bit-identical
(kornia's batched transforms draw from torch's global generator and have no depth gain or shadow).
Each transform applies to a sample with probability ``P_APPLY``; masks never change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

P_APPLY = 0.5
GAIN_DB = 6.0  # overall gain drawn in +-this many dB
SLOPE_DB = 12.0  # and a gain that changes by up to +-this many dB from the top to the bottom of the image
BLUR_SIGMA = (1.0, 1.5)  # axial, lateral: the point-spread function's sd drawn in [0, this] pixels at 256 px
NOISE_SD = 0.25  # multiplicative speckle noise: sd drawn in [0, this]
GAMMA = 2.0  # gamma drawn log-uniformly in [1/this, this]
CONTRAST = 0.4  # contrast about the image mean scaled by 1 +- this
SHADOW_DEPTH = 0.5  # an acoustic shadow's attenuation drawn in [this, 0.9] (1: none)
PARAMETERS = 16  # numbers drawn per sample: 5 on/off draws, then each transform's values


def draw_ultrasound(n: int, generator: torch.Generator) -> torch.Tensor:
    """One row of PARAMETERS uniform numbers per sample, drawn on the host from the seeded generator
    (apply_ultrasound reads them)."""
    return torch.rand(n, PARAMETERS, generator=generator, dtype=torch.float64).float()


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, 2 * radius + 1) normalised 1-D Gaussian kernels; sigma 0 is the identity."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    sd = sigma.clamp(min=1e-3)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None] / sd) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _blur(images: torch.Tensor, axial: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Separable per-sample Gaussian blur: axial (vertical) then lateral (horizontal)."""
    n, c, h, w = images.shape
    radius = max(1, int(math.ceil(3 * float(max(axial.max(), lateral.max(), 0.1)))))
    flat = images.reshape(1, n * c, h, w)
    vertical = _gaussian_kernels(axial, radius).repeat_interleave(c, dim=0)[:, None, :, None]
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), vertical, groups=n * c)
    horizontal = _gaussian_kernels(lateral, radius).repeat_interleave(c, dim=0)[:, None, None, :]
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=n * c)
    return flat.reshape(n, c, h, w)


def apply_ultrasound(images: torch.Tensor, draws: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """The batch's images (n, 3, h, w) in [0, 1] with each sample's drawn transforms applied (draws:
    its rows of draw_ultrasound, on the images' device); ``noise``: a generator on that device."""
    n, _, h, w = images.shape
    d = draws.to(images.device, images.dtype)
    on = d[:, :5] < P_APPLY  # gain, shadow, blur, noise, curve
    depth = torch.linspace(0, 1, h, device=images.device, dtype=images.dtype)[None, None, :, None]
    across = torch.linspace(0, 1, w, device=images.device, dtype=images.dtype)[None, None, None, :]
    gain_db = (
        GAIN_DB * (2 * d[:, 5] - 1)[:, None, None, None] + SLOPE_DB * (2 * d[:, 6] - 1)[:, None, None, None] * depth
    )
    images = torch.where(on[:, 0, None, None, None], images * 10 ** (gain_db / 20), images)
    # A shadow: a vertical band (centre, half-width) below a depth, darkened with soft edges.
    centre, half = d[:, 7, None, None, None], (0.04 + 0.12 * d[:, 8])[:, None, None, None]
    top = (0.1 + 0.5 * d[:, 9])[:, None, None, None]
    strength = SHADOW_DEPTH + (0.9 - SHADOW_DEPTH) * d[:, 10, None, None, None]
    band = torch.sigmoid((half - (across - centre).abs()) / 0.02) * torch.sigmoid((depth - top) / 0.02)
    images = torch.where(on[:, 1, None, None, None], images * (1 - band * (1 - strength)), images)
    scale = h / 256  # the blur is drawn for a 256-pixel image and scaled to this one
    axial = torch.where(on[:, 2], BLUR_SIGMA[0] * scale * d[:, 11], torch.zeros_like(d[:, 11]))
    lateral = torch.where(on[:, 2], BLUR_SIGMA[1] * scale * d[:, 12], torch.zeros_like(d[:, 12]))
    if bool(on[:, 2].any()):
        images = _blur(images, axial, lateral)
    speckle = torch.randn((n, 1, h, w), generator=noise, device=images.device, dtype=images.dtype)
    sd = torch.where(on[:, 3], NOISE_SD * d[:, 13], torch.zeros_like(d[:, 13]))[:, None, None, None]
    images = images * (1 + sd * speckle).clamp(min=0)
    # The log-compression curve: a gamma, then the contrast about the image's mean.
    images = images.clamp(0, 1)
    gamma = torch.exp(math.log(GAMMA) * (2 * d[:, 14] - 1))[:, None, None, None]
    contrast = (1 + CONTRAST * (2 * d[:, 15] - 1))[:, None, None, None]
    curved = images.pow(gamma)
    mean = curved.mean(dim=(1, 2, 3), keepdim=True)
    curved = (mean + (curved - mean) * contrast).clamp(0, 1)
    return torch.where(on[:, 4, None, None, None], curved, images)
