"""UNeXt (beyond the paper: a network this study adds): a conv + tokenized-MLP U-shaped network, re-implemented.

Paper: J. M. J. Valanarasu, V. M. Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
MICCAI 2022 (arXiv:2203.04967). Code read: github.com/jeya-maria-jose/UNeXt-pytorch at commit 6ad0855
(archs.py, class ``UNext``); docs/modern_networks.md has the details and the training recipe.

Three conv stages (conv 3x3 -> BN -> max-pool -> ReLU) and two tokenized-MLP stages (a stride-2 conv
"patch embedding", one shifted-MLP block, LayerNorm) down to 1/32; the decoder mirrors them, adding
the skips. Widths 16, 32, 128, 160, 256 as in the authors' ``UNext`` (the code's widths, which give the
paper's 1.47 M; see docs/modern_networks.md on the paper's text). With one output channel the count
is the authors' 1,471,921 exactly.

Changes from the authors' code, none of which changes a parameter, nor an output beyond float
rounding:
- the network returns one channel of logits (the authors' ``final`` with ``num_classes=1``);
- feature maps stay NCHW between stages (the authors flatten to tokens and back around every block);
- the axial shift is a zero-filled translation per channel group (pad + slice), equal to the authors'
  pad -> roll -> crop, without ``torch.roll``;
- the unused pieces of the authors' class (attention arguments, a softmax) are left out; drop and
  drop-path rates are 0 in the authors' defaults, so there is no dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sonoseg.networks.bilinear import resize

WIDTHS = (16, 32, 128, 160, 256)
SHIFT_GROUPS = 5  # the authors' shift_size: channel groups shifted by -2..2 pixels


def init_like_segformer(module: nn.Module) -> None:
    """The authors' ``_init_weights`` (from SegFormer), applied to the MLP blocks and patch embeddings
    only, as in their code; the plain conv stages keep PyTorch's default initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """A LayerNorm over the channels of an NCHW map (what the authors apply to the token sequence)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def translate(x: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    """``x`` moved by ``offset`` pixels along ``dim`` (2: height, 3: width), zeros shifted in."""
    before, after = max(offset, 0), max(-offset, 0)
    padding = (before, after, 0, 0) if dim == 3 else (0, 0, before, after)
    return F.pad(x, padding).narrow(dim, after, x.shape[dim])


def axial_shift(x: torch.Tensor, dim: int, groups: int = SHIFT_GROUPS) -> torch.Tensor:
    """UNeXt's shift: the channels split into ``groups`` chunks (torch.chunk, as the authors), chunk i
    moved by i - groups // 2 pixels along ``dim``, so that the next token-wise MLP sees its neighbours."""
    reach = groups // 2
    chunks = torch.chunk(x, groups, dim=1)
    return torch.cat([translate(c, offset, dim) for c, offset in zip(chunks, range(-reach, reach + 1))], dim=1)


class ShiftedMLPBlock(nn.Module):
    """x + MLP(LayerNorm(x)); the MLP: shift along height -> token-wise linear -> depthwise conv 3x3 ->
    GELU -> shift along width -> token-wise linear (the authors' shiftedBlock + shiftmlp, ratio 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)
        init_like_segformer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = axial_shift(channel_norm(self.norm, x), dim=2)
        y = self.fc1(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = axial_shift(self.act(self.dwconv(y)), dim=3)
        y = self.fc2(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + y


class PatchEmbed(nn.Module):
    """The tokenizer: conv 3x3, stride 2 (halves the size) -> LayerNorm (the authors' OverlapPatchEmbed)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_ch)
        init_like_segformer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(self.norm, self.proj(x))


class TokenizedStage(nn.Module):
    """Encoder stage 4 or 5: patch embedding -> shifted-MLP block -> LayerNorm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.embed = PatchEmbed(in_ch, out_ch)
        self.block = ShiftedMLPBlock(out_ch)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(self.norm, self.block(self.embed(x)))


class ConvDown(nn.Module):
    """conv 3x3 -> BN -> max-pool 2 -> ReLU (the authors' order: pooling before the activation)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.max_pool2d(self.bn(self.conv(x)), 2))


class ConvUp(nn.Module):
    """conv 3x3 -> BN (absent in the last decoder stage, as in the authors' code) -> bilinear x2 -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # align_corners False: F.interpolate's default, which the authors' code relies on
        return F.relu(resize(self.bn(self.conv(x)), scale_factor=2, align_corners=False))


class DecoderMLPStage(nn.Module):
    """Decoder stage 1 or 2: ConvUp, add the skip, shifted-MLP block, LayerNorm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = ConvUp(in_ch, out_ch)
        self.block = ShiftedMLPBlock(out_ch)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return channel_norm(self.norm, self.block(self.up(x) + skip))


class UNeXt(nn.Module):
    """UNeXt with the authors' default widths; input N x 3 x S x S (S a multiple of 32), output
    N x out_channels x S x S logits."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.encoder1 = ConvDown(in_channels, c1)
        self.encoder2 = ConvDown(c1, c2)
        self.encoder3 = ConvDown(c2, c3)
        self.encoder4 = TokenizedStage(c3, c4)
        self.bottleneck = TokenizedStage(c4, c5)
        self.decoder1 = DecoderMLPStage(c5, c4)
        self.decoder2 = DecoderMLPStage(c4, c3)
        self.decoder3 = ConvUp(c3, c2)
        self.decoder4 = ConvUp(c2, c1)
        self.decoder5 = ConvUp(c1, c1, batch_norm=False)
        self.final = nn.Conv2d(c1, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t1 = self.encoder1(x)  # c1, S/2
        t2 = self.encoder2(t1)  # c2, S/4
        t3 = self.encoder3(t2)  # c3, S/8
        t4 = self.encoder4(t3)  # c4, S/16
        out = self.bottleneck(t4)  # c5, S/32
        out = self.decoder1(out, t4)
        out = self.decoder2(out, t3)
        out = self.decoder3(out) + t2
        out = self.decoder4(out) + t1
        return self.final(self.decoder5(out))


def unext() -> UNeXt:
    """UNeXt as the authors' ``UNext(num_classes=1)``: 1,471,921 parameters."""
    return UNeXt()
