"""MALUNet (beyond the paper: a network this study adds): a multi-attention, very light U-shaped
network, re-implemented.

Paper: J. Ruan, S. Xiang, M. Xie, T. Liu, Y. Fu, "MALUNet: A Multi-Attention and Light-weight UNet for
Skin Lesion Segmentation", IEEE BIBM 2022 (arXiv:2211.01784). Code read: github.com/JCruan519/MALUNet
at commit e184b47 (models/malunet.py, class ``MALUNet``, defaults of configs/config_setting.py);
docs/modern_networks.md has the details and the training recipe.

Widths 8, 16, 24, 32, 48, 64. Three plain conv stages, then three stages of external attention (EA)
followed by dilated gated attention (DGA); every encoder stage is GroupNorm(4) -> max-pool -> GELU.
The five skips pass a spatial-then-channel attention bridge (SAB, CAB). The decoder mirrors the
encoder (DGA, EA; then plain convs), adding the skips after bilinear x2 (align_corners True).
One output channel: 177,943 parameters, the authors' count exactly.

Changes from the authors' code:
- logits, not probabilities: the authors end with a sigmoid; sonoseg applies it itself;
- the EA block's two memory units are independent parameters that start as transposes of one
  draw. In the authors' code the second unit's weight is set to a transposed *view* of the first's
  storage, so they share memory until the model is moved to a device (``.cuda()`` copies each
  parameter separately; the authors train on a GPU, so they train two independent units). Here that
  start is made explicit, with no shared storage, so that CPU training and deepcopy behave the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sonoseg.networks.bilinear import resize

WIDTHS = (8, 16, 24, 32, 48, 64)
DILATIONS = (7, 5, 2, 1)
GROUPS = 4  # every GroupNorm of the network


class DepthwiseSeparable(nn.Module):
    """depthwise k x k conv -> GroupNorm(4) -> 1x1 conv (the authors' DepthWiseConv2d)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size=kernel, padding=kernel // 2, groups=in_ch)
        self.norm = nn.GroupNorm(GROUPS, in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))


class GatedAttentionUnit(nn.Module):
    """out = GELU(DS3(sigmoid(DS3(x)) * GELU(DS5(x)))) + 1x1(x): a gate times a wider-kernel value."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3):
        super().__init__()
        self.gate = DepthwiseSeparable(in_ch, in_ch, kernel)
        self.value = DepthwiseSeparable(in_ch, in_ch, kernel + 2)
        self.out = DepthwiseSeparable(in_ch, out_ch, 3)
        self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(mixed)) + self.shortcut(x)


class DilatedGatedAttention(nn.Module):
    """Channels in four groups, each a depthwise 3x3 conv of its own dilation (7, 5, 2, 1: several
    receptive fields at the cost of one), GroupNorm -> 1x1 -> GELU, then the gated attention unit."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        quarter = in_ch // 4
        self.dilated = nn.ModuleList(
            nn.Conv2d(quarter, quarter, kernel_size=3, padding=d, dilation=d, groups=quarter) for d in DILATIONS
        )
        self.norm = nn.GroupNorm(GROUPS, in_ch)
        self.mix = nn.Conv2d(in_ch, in_ch, kernel_size=1)
        self.gau = GatedAttentionUnit(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [conv(part) for conv, part in zip(self.dilated, torch.chunk(x, 4, dim=1))]
        return self.gau(F.gelu(self.mix(self.norm(torch.cat(parts, dim=1)))))


class ExternalAttention(nn.Module):
    """External attention (Guo et al., 2021) with a residual: two small learned memories (4 x ch units)
    shared by all images replace self-attention's keys and values, so the cost is linear in pixels.
    Double normalisation as the authors: softmax over pixels, then over the memory units."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv_in = nn.Conv2d(ch, ch, kernel_size=1)
        self.memory_key = nn.Conv1d(ch, 4 * ch, kernel_size=1, bias=False)
        self.memory_value = nn.Conv1d(4 * ch, ch, kernel_size=1, bias=False)
        self.conv_out = nn.Conv2d(ch, ch, kernel_size=1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, ch)

    @torch.no_grad()
    def start_memories_transposed(self) -> None:
        """The key memory set to the transpose of the value memory, as a copy (see the module doc: the
        draw that survives the authors' initialisation is the value memory's, std sqrt(2 / ch))."""
        self.memory_key.weight.copy_(self.memory_value.weight.permute(1, 0, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.conv_in(x).flatten(2)  # n, c, h*w
        attn = F.softmax(self.memory_key(y), dim=-1)  # n, 4c, h*w
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        y = self.memory_value(attn).reshape(n, c, h, w)
        return F.gelu(self.norm(self.conv_out(y)) + x)


class ChannelAttentionBridge(nn.Module):
    """CAB: the five skips' channel means, concatenated, mixed by a 1-D conv (k=3), then one linear
    layer per skip gives that skip's channel weights (sigmoid)."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        total = sum(widths)
        self.mix = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        self.heads = nn.ModuleList(nn.Linear(total, c) for c in widths)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        pooled = torch.cat([t.mean(dim=(2, 3)) for t in skips], dim=1)  # n, sum(widths)
        mixed = self.mix(pooled.unsqueeze(1))  # n, 1, sum(widths)
        return [torch.sigmoid(head(mixed)).transpose(1, 2).unsqueeze(-1) for head in self.heads]  # n, c, 1, 1


class SpatialAttentionBridge(nn.Module):
    """SAB: one shared dilated 7x7 conv (dilation 3) on [channel mean, channel max] of each skip gives
    that skip's spatial weights (sigmoid)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=9, dilation=3)

    def forward(self, skip: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([skip.mean(dim=1, keepdim=True), skip.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class AttentionBridge(nn.Module):
    """SC_Att_Bridge: s = SAB(t) * t; m = s + t; out = CAB(m) * m + s (the authors' residuals)."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.channel = ChannelAttentionBridge(widths)
        self.spatial = SpatialAttentionBridge()

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        spatial = [self.spatial(t) * t for t in skips]
        mixed = [s + t for s, t in zip(spatial, skips)]
        return [w * m + s for w, m, s in zip(self.channel(mixed), mixed, spatial)]


def up2(x: torch.Tensor) -> torch.Tensor:
    return resize(x, scale_factor=2, align_corners=True)


class MALUNet(nn.Module):
    """MALUNet; input N x 3 x S x S (S a multiple of 32), output N x out_channels x S x S logits.

    Modules are registered in the authors' order, so that their state dicts load position by position.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        c = widths
        self.encoder1 = nn.Conv2d(in_channels, c[0], kernel_size=3, padding=1)
        self.encoder2 = nn.Conv2d(c[0], c[1], kernel_size=3, padding=1)
        self.encoder3 = nn.Conv2d(c[1], c[2], kernel_size=3, padding=1)
        self.encoder4 = nn.Sequential(ExternalAttention(c[2]), DilatedGatedAttention(c[2], c[3]))
        self.encoder5 = nn.Sequential(ExternalAttention(c[3]), DilatedGatedAttention(c[3], c[4]))
        self.encoder6 = nn.Sequential(ExternalAttention(c[4]), DilatedGatedAttention(c[4], c[5]))
        self.bridge = AttentionBridge(c[:5])
        self.decoder1 = nn.Sequential(DilatedGatedAttention(c[5], c[4]), ExternalAttention(c[4]))
        self.decoder2 = nn.Sequential(DilatedGatedAttention(c[4], c[3]), ExternalAttention(c[3]))
        self.decoder3 = nn.Sequential(DilatedGatedAttention(c[3], c[2]), ExternalAttention(c[2]))
        self.decoder4 = nn.Conv2d(c[2], c[1], kernel_size=3, padding=1)
        self.decoder5 = nn.Conv2d(c[1], c[0], kernel_size=3, padding=1)
        self.encoder_norms = nn.ModuleList(nn.GroupNorm(GROUPS, ch) for ch in c[:5])
        self.decoder_norms = nn.ModuleList(nn.GroupNorm(GROUPS, ch) for ch in reversed(c[:5]))
        self.final = nn.Conv2d(c[0], out_channels, kernel_size=1)
        init_weights(self)
        for m in self.modules():
            if isinstance(m, ExternalAttention):
                m.start_memories_transposed()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoders = (self.encoder1, self.encoder2, self.encoder3, self.encoder4, self.encoder5)
        skips = []
        out = x
        for encoder, norm in zip(encoders, self.encoder_norms):
            out = F.gelu(F.max_pool2d(norm(encoder(out)), 2))
            skips.append(out)  # c0..c4 at S/2 .. S/32
        t1, t2, t3, t4, t5 = self.bridge(skips)
        out = F.gelu(self.encoder6(out))  # c5, S/32 (from the skip before the bridge, as the authors)
        n1, n2, n3, n4, n5 = self.decoder_norms
        out = F.gelu(n1(self.decoder1(out))) + t5  # c4, S/32
        out = F.gelu(up2(n2(self.decoder2(out)))) + t4  # c3, S/16
        out = F.gelu(up2(n3(self.decoder3(out)))) + t3  # c2, S/8
        out = F.gelu(up2(n4(self.decoder4(out)))) + t2  # c1, S/4
        out = F.gelu(up2(n5(self.decoder5(out)))) + t1  # c0, S/2
        return up2(self.final(out))


def init_weights(model: nn.Module) -> None:
    """The authors' ``_init_weights`` (MALUNet and EGE-UNet share it): He-normal (fan-out) 2-D convs with
    zero bias, He-normal 1-D convs (bias left at PyTorch's default), trunc-normal linears."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv1d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def malunet() -> MALUNet:
    """MALUNet as the authors' ``MALUNet(num_classes=1, c_list=[8, 16, 24, 32, 48, 64], split_att='fc',
    bridge=True)``, less the final sigmoid: 177,943 parameters."""
    return MALUNet()
