"""The network registry: every network of the study is one entry, built by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sonoseg.catalog import has_backbone  # noqa: F401 - part of the registry's interface
from sonoseg.errors import SonosegError
from sonoseg.models.unet import light_unet, lighter_unet, unet

LIGHTER_CHANNELS = (1, 2, 4, 8, 16, 32, 64, 128)


def _fcn(skips: int) -> nn.Module:
    from sonoseg.models.fcn import FCN  # torchvision takes seconds to import: only when needed

    return FCN(skips)


def _deeplab(backbone: str) -> nn.Module:
    from sonoseg.models import deeplab

    return deeplab.DeepLabV3Plus(getattr(deeplab, backbone)())


REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "unet": unet,
    "light_unet": light_unet,
    **{f"lighter_unet_c{c}": (lambda c=c: lighter_unet(c)) for c in LIGHTER_CHANNELS},
    "fcn8s": lambda: _fcn(skips=2),
    "fcn16s": lambda: _fcn(skips=1),
    "fcn32s": lambda: _fcn(skips=0),
    "deeplabv3plus_resnet101": lambda: _deeplab("ResNet101Backbone"),
    "deeplabv3plus_mobilenetv2": lambda: _deeplab("MobileNetV2Backbone"),
    "deeplabv3plus_xception": lambda: _deeplab("AlignedXceptionBackbone"),
}

# Every network downsamples five times (or to output stride 16 plus a stride-2 low-level path).
INPUT_MULTIPLE = 32


def names() -> list[str]:
    return list(REGISTRY)


def build(name: str) -> nn.Module:
    try:
        builder = REGISTRY[name]
    except KeyError:
        raise SonosegError(f"unknown network {name!r}; known networks: {', '.join(REGISTRY)}") from None
    return builder()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm affine included, running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def backbone_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "backbone", None)


def load_pretrained_backbone(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (e.g. ImageNet weights saved from torchvision) into the backbone.

    Keys may be the backbone's own or those of the full torchvision classifier; classifier keys
    (fc., classifier.) are ignored. Any other missing or unexpected key is an error.
    """
    path = Path(path)
    backbone = backbone_of(model)
    if backbone is None:
        raise SonosegError(f"train.pretrained_backbone={path}: this network has no pretrained backbone to load")
    if not path.is_file():
        raise SonosegError(f"train.pretrained_backbone: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise SonosegError(f"train.pretrained_backbone: {path} is not a readable PyTorch state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SonosegError(f"train.pretrained_backbone: {path} does not hold a state dict")
    own = backbone.state_dict()
    mapped = _map_backbone_keys(state, own)
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise SonosegError(
            f"train.pretrained_backbone: {path} does not match the backbone: {len(missing)} tensors missing "
            f"(first: {missing[:3]})"
        )
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise SonosegError(
                f"train.pretrained_backbone: {path}: tensor {key} has shape {tuple(tensor.shape)}, "
                f"the backbone needs {tuple(own[key].shape)}"
            )
    backbone.load_state_dict(mapped, strict=True)


def _map_backbone_keys(state: dict, own: dict) -> dict:
    """Match a torchvision classifier's keys to our backbone's by order of same-shaped tensors.

    Our backbones keep torchvision's modules but regroup them (stem, low/high), so names differ
    while the order and shapes of tensors do not.
    """
    if set(own) <= set(state):
        return {k: state[k] for k in own}
    source = [(k, v) for k, v in state.items() if not k.startswith(("fc.", "classifier."))]
    # mobilenet_v2's final 1280-channel conv (features.18) is not part of our backbone.
    source = [(k, v) for k, v in source if not k.startswith("features.18.")]
    if len(source) != len(own):
        return {}
    return {k: v for (k, _), (_, v) in zip(own.items(), source)}
