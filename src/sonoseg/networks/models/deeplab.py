"""DeepLab v3+ (output stride 16) as in jfzhang95/pytorch-deeplab-xception, on torchvision backbones.

ResNet-101 gives 59,339,169 parameters for one class. The paper prints 54.7 M for "ResNet-101",
which is the Aligned-Xception variant's count; no class count makes ResNet-101 reach it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2, resnet101

from sonoseg.networks.bilinear import resize


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    def __init__(self, in_ch: int, rates: tuple[int, ...] = (6, 12, 18), width: int = 256):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_ch, width, 1)] + [conv_bn_relu(in_ch, width, 3, r) for r in rates]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_ch, width, 1))
        self.project = conv_bn_relu(width * (len(rates) + 2), width, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = resize(self.image_pool(x), size=x.shape[2:], align_corners=True)
        x = torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1)
        return self.dropout(self.project(x))


class Decoder(nn.Module):
    def __init__(self, low_level_ch: int, out_channels: int, width: int = 256):
        super().__init__()
        self.reduce = conv_bn_relu(low_level_ch, 48, 1)
        self.refine = nn.Sequential(
            conv_bn_relu(width + 48, width, 3),
            nn.Dropout(0.5),
            conv_bn_relu(width, width, 3),
            nn.Dropout(0.1),
            nn.Conv2d(width, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        x = resize(x, size=low_level.shape[2:], align_corners=True)
        return self.refine(torch.cat([x, self.reduce(low_level)], dim=1))


class ResNet101Backbone(nn.Module):
    """torchvision ResNet-101 without its classifier, at output stride 16 as in jfzhang95's code.

    layer4 keeps stride 1 and uses multi-grid (1, 2, 4) x rate 2: its three blocks' 3x3 convs are
    dilated 2, 4 and 8 (torchvision's ``replace_stride_with_dilation`` alone would give 1, 2, 2).
    """

    kind = "resnet101"
    channels, low_level_channels = 2048, 256
    LAYER4_DILATIONS = (2, 4, 8)

    def __init__(self):
        super().__init__()
        net = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
        for block, dilation in zip(net.layer4, self.LAYER4_DILATIONS, strict=True):
            block.conv2.dilation = (dilation, dilation)
            block.conv2.padding = (dilation, dilation)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_level = self.layer1(self.stem(x))
        return self.layer4(self.layer3(self.layer2(low_level))), low_level


class MobileNetV2Backbone(nn.Module):
    """torchvision MobileNetV2 features without the final 1280-channel conv, at output stride 16.

    As jfzhang95's code tracks the running stride: once it reaches 16 (after the 64-channel
    blocks), later blocks run at stride 1 and the dilation grows by the stride they would have
    had. The 96-channel blocks (stride 1 anyway) and the 160-channel blocks (whose first block
    had stride 2) keep dilation 1; the 320-channel block comes after that skipped stride and is
    dilated 2.
    """

    kind = "mobilenet_v2"
    channels, low_level_channels = 320, 24
    # torchvision's features: 14-16 are the 160-channel blocks, 17 the 320-channel block.
    BLOCK_DILATIONS = {14: 1, 15: 1, 16: 1, 17: 2}

    def __init__(self):
        super().__init__()
        features = mobilenet_v2(weights=None).features[:-1]
        for index, dilation in self.BLOCK_DILATIONS.items():
            depthwise = features[index].conv[1][0]
            depthwise.stride = (1, 1)
            depthwise.dilation = (dilation, dilation)
            depthwise.padding = (dilation, dilation)
        self.low = features[:4]
        self.high = features[4:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_level = self.low(x)
        return self.high(low_level), low_level


# ----------------------------------------------------------------------------- Aligned Xception


def fixed_padding(x: torch.Tensor, kernel: int, dilation: int) -> torch.Tensor:
    effective = kernel + (kernel - 1) * (dilation - 1)
    total = effective - 1
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


class SeparableConv(nn.Module):
    """Depthwise 3x3 (fixed 'same' padding), BN, pointwise 1x1: Aligned Xception's separable conv."""

    def __init__(self, in_ch, out_ch, stride=1, dilation=1):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, stride, 0, dilation, groups=in_ch, bias=False)
        self.bn = nn.BatchNorm2d(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x):
        x = fixed_padding(x, 3, self.depthwise.dilation[0])
        return self.pointwise(self.bn(self.depthwise(x)))


class XceptionBlock(nn.Module):
    """Residual block of separable convs, laid out as jfzhang95's Block (grow_first, is_last...)."""

    def __init__(self, in_ch, out_ch, reps, stride=1, dilation=1, start_with_relu=True, grow_first=True, is_last=False):
        super().__init__()
        if out_ch != in_ch or stride != 1:
            self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.skip = None
        layers = []

        def sep(a: int, b: int, s: int = 1, d: int = dilation) -> None:
            layers.extend([nn.ReLU(inplace=False), SeparableConv(a, b, s, d), nn.BatchNorm2d(b)])

        width = in_ch
        if grow_first:
            sep(in_ch, out_ch)
            width = out_ch
        for _ in range(reps - 1):
            sep(width, width)
        if not grow_first:
            sep(in_ch, out_ch)
        if stride != 1:
            sep(out_ch, out_ch, 2, 1)
        if stride == 1 and is_last:
            sep(out_ch, out_ch, 1, 1)
        if not start_with_relu:
            layers = layers[1:]
        self.rep = nn.Sequential(*layers)

    def forward(self, x):
        skip = x if self.skip is None else self.skip(x)
        return self.rep(x) + skip


class AlignedXceptionBackbone(nn.Module):
    """jfzhang95's Aligned Xception at output stride 16: with ASPP and the decoder, 54,700,177
    parameters, the number the paper printed for DeepLab v3+ "ResNet-101"."""

    kind = "xception"
    channels, low_level_channels = 2048, 128

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.block1 = XceptionBlock(64, 128, 2, stride=2, start_with_relu=False)
        self.entry = nn.Sequential(
            XceptionBlock(128, 256, 2, stride=2, start_with_relu=False),
            XceptionBlock(256, 728, 2, stride=2, is_last=True),
        )
        self.middle = nn.Sequential(*[XceptionBlock(728, 728, 3) for _ in range(16)])
        self.exit = nn.Sequential(
            XceptionBlock(728, 1024, 2, dilation=1, grow_first=False, is_last=True),
            nn.ReLU(inplace=True),
            SeparableConv(1024, 1536, dilation=2),
            nn.BatchNorm2d(1536),
            nn.ReLU(inplace=True),
            SeparableConv(1536, 1536, dilation=2),
            nn.BatchNorm2d(1536),
            nn.ReLU(inplace=True),
            SeparableConv(1536, 2048, dilation=2),
            nn.BatchNorm2d(2048),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        low_level = F.relu(self.block1(self.stem(x)))
        return self.exit(self.middle(self.entry(low_level))), low_level


class DeepLabV3Plus(nn.Module):
    def __init__(self, backbone: nn.Module, out_channels: int = 1):
        super().__init__()
        self.backbone = backbone
        self.backbone_kind = backbone.kind
        self.aspp = ASPP(backbone.channels)
        self.decoder = Decoder(backbone.low_level_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high, low_level = self.backbone(x)
        logits = self.decoder(self.aspp(high), low_level)
        return resize(logits, size=x.shape[2:], align_corners=True)


def deeplab_resnet101() -> DeepLabV3Plus:
    return DeepLabV3Plus(ResNet101Backbone())


def deeplab_mobilenetv2() -> DeepLabV3Plus:
    return DeepLabV3Plus(MobileNetV2Backbone())


def deeplab_xception() -> DeepLabV3Plus:
    return DeepLabV3Plus(AlignedXceptionBackbone())
