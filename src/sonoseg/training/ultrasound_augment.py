"""Ultrasound-specific intensity augmentation (recipe ``ultrasound_augment``): what changes between
scanners, presets and simulators while the anatomy stays — time-gain compensation and attenuation
(a gain that varies with depth), the point-spread function (axial and lateral blur), speckle and
electronic noise, the log-compression curve (gamma and contrast), and acoustic shadows below
strong reflectors; and lesions that look otherwise than the training set's: an echo that differs
less from the tissue's, a rim inside the edge (a dark halo or an echogenic rim, both common
sonographic signs, which the annotation includes) and a heterogeneous interior. The geometric
augmentation (sonoseg.training.train.draw_augmentation, the paper's) is applied after it, so depth
is still the vertical axis here.

Written in torch rather than taken from a per-image library (usaugment, albumentations, MONAI):
training keeps its images on the device and augments a batch at a time (sonoseg.training.train), and
every draw comes from the training's seeded generator, so a resumed training is bit-identical
(kornia's batched transforms draw from torch's global generator and have no depth gain or shadow).
A sample is changed at all with probability ``P_SAMPLE``, and then each transform with probability
``P_APPLY``; masks never change. The strengths and the half left clean were set on the development
external set (docs/method.md): changing every sample as strongly as the first version did (gain
+-6 dB, slope +-12 dB, gamma in [1/2, 2], contrast +-40 %) cost the U-net family 0.06-0.10 Dice
on the phantom's own test images, and this milder mix costs less for more on the development set;
the rim and the texture were added, and their strengths set, on it too (docs/results/quick.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

P_SAMPLE = 0.5  # the share of samples changed at all: the rest train on the images as they are
P_APPLY = 0.5  # each transform's probability in a sample that is changed
GAIN_DB = 3.0  # overall gain drawn in +-this many dB
SLOPE_DB = 6.0  # and a gain that changes by up to +-this many dB from the top to the bottom of the image
BLUR_SIGMA = (1.0, 1.5)  # axial, lateral: the point-spread function's sd drawn in [0, this] pixels at 256 px
NOISE_SD = 0.25  # multiplicative speckle noise: sd drawn in [0, this]
GAMMA = 1.5  # gamma drawn log-uniformly in [1/this, this]
CONTRAST = 0.25  # contrast about the image mean scaled by 1 +- this
SHADOW_DEPTH = 0.5  # an acoustic shadow's attenuation drawn in [this, 0.9] (1: none)
LESION_CONTRAST = (0.2, 1.0)  # the lesion's mean contrast to its surroundings scaled by a factor in this range
RIM_WIDTH = (0.2, 0.45)  # a rim's width: this fraction of the lesion's equivalent radius (at least 1 pixel)
RIM_LEVEL = (0.1, 0.35)  # its brightness shifted by +-this much (a 50 dB display: 5-17 dB), dark halo or echogenic rim
TEXTURE = 0.2  # a heterogeneous interior: a smooth random field of amplitude up to this inside the lesion
TEXTURE_CELLS = 4  # the field's resolution across the image (it is smooth at the lesion's scale)
PARAMETERS = 24  # per sample: 5 on/off draws, each transform's values, the lesion's 2 + 3 + 2, the sample's


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


def _lesion_contrast(images: torch.Tensor, masks: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each lesion's mean brightness moved towards its surroundings' (factor 1: unchanged; 0: no mean
    contrast left), its texture kept. The display is log-compressed, so a pixel difference is a
    difference of echo in dB: this is a lesion whose echogenicity differs less from the tissue's, as
    lesions, presets and scanners do. The whole lesion shifts, and the shift fades over the pixel outside its edge.
    """
    inside = masks.to(images.dtype)
    soft = torch.maximum(inside, F.avg_pool2d(inside, 3, stride=1, padding=1, count_include_pad=False))
    area = inside.sum(dim=(1, 2, 3), keepdim=True)
    outside = 1 - soft
    lesion_mean = (images.mean(dim=1, keepdim=True) * inside).sum(dim=(1, 2, 3), keepdim=True) / area.clamp(min=1)
    tissue_mean = (images.mean(dim=1, keepdim=True) * outside).sum(dim=(1, 2, 3), keepdim=True) / outside.sum(
        dim=(1, 2, 3), keepdim=True
    ).clamp(min=1)
    shift = (factor[:, None, None, None] - 1) * (lesion_mean - tissue_mean) * (area > 0)
    return images + shift * soft


def _erode(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """A (1, 1, h, w) mask eroded by a square of this radius in pixels."""
    return 1 - F.max_pool2d(1 - masks, 2 * radius + 1, stride=1, padding=radius)


def _lesion_rim(images: torch.Tensor, masks: torch.Tensor, width: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """A band inside each lesion's edge, ``width`` times the lesion's equivalent radius wide, made
    brighter or darker by ``level`` (0: unchanged): the lesion's extent is the rim's outer edge, as an
    annotator draws a halo or an echogenic rim."""
    inside = masks.to(images.dtype)
    radius = torch.sqrt(inside.sum(dim=(1, 2, 3)) / math.pi)
    widths = (width * radius).round().clamp(min=1).int().tolist()  # one read from the device, not one per sample
    bands = []
    for i, pixels in enumerate(widths):  # one erosion per sample: its own width in pixels
        bands.append(inside[i : i + 1] - _erode(inside[i : i + 1], pixels))
    return images + level[:, None, None, None] * torch.cat(bands)


def _lesion_texture(
    images: torch.Tensor, masks: torch.Tensor, amplitude: torch.Tensor, noise: torch.Generator
) -> torch.Tensor:
    """A heterogeneous lesion: a smooth random field, zero-mean over the lesion, added inside it."""
    n, _, h, w = images.shape
    inside = masks.to(images.dtype)
    coarse = torch.randn((n, 1, TEXTURE_CELLS, TEXTURE_CELLS), generator=noise, device=images.device)
    field = F.interpolate(coarse.to(images.dtype), size=(h, w), mode="bicubic", align_corners=False)
    area = inside.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    field = field - (field * inside).sum(dim=(1, 2, 3), keepdim=True) / area
    return images + amplitude[:, None, None, None] * field * inside


def apply_ultrasound(
    images: torch.Tensor, draws: torch.Tensor, noise: torch.Generator, masks: torch.Tensor | None = None
) -> torch.Tensor:
    """The batch's images (n, 3, h, w) in [0, 1] with each sample's drawn transforms applied (draws:
    its rows of draw_ultrasound, on the images' device); ``noise``: a generator on that device;
    ``masks`` (n, 1, h, w): the lesions, whose contrast is changed first (skipped without them)."""
    n, _, h, w = images.shape
    d = draws.to(images.device, images.dtype)
    unchanged = images
    if masks is not None:
        low, high = LESION_CONTRAST
        factor = torch.where(d[:, 16] < P_APPLY, low + (high - low) * d[:, 17], torch.ones_like(d[:, 17]))
        images = _lesion_contrast(images, masks, factor)
        rim_width = RIM_WIDTH[0] + (RIM_WIDTH[1] - RIM_WIDTH[0]) * d[:, 19]
        low, high = RIM_LEVEL  # the sign from the draw's half, the size from its place within it
        size = low + (high - low) * (2 * d[:, 20] - 1).abs()
        rim_level = torch.where(d[:, 18] < P_APPLY, torch.sign(d[:, 20] - 0.5) * size, torch.zeros_like(size))
        images = _lesion_rim(images, masks, rim_width, rim_level)
        amplitude = torch.where(d[:, 21] < P_APPLY, TEXTURE * d[:, 22], torch.zeros_like(d[:, 22]))
        images = _lesion_texture(images, masks, amplitude, noise).clamp(0, 1)
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
    images = torch.where(on[:, 4, None, None, None], curved, images)
    return torch.where((d[:, -1] < P_SAMPLE)[:, None, None, None], images, unchanged)  # the last: the sample's
