"""Facts about the study's networks that the workflow needs without importing torch."""

from __future__ import annotations

# The backbone kinds ImageNet weights can initialise, with how to save such a file (docs/method.md).
BACKBONE_KINDS = ("vgg16", "resnet101", "mobilenet_v2", "xception")

# Network -> the kind of its backbone. Networks not listed have no pretrainable backbone.
# A test checks this table against the models the registry builds.
NETWORK_BACKBONES = {
    "fcn8s": "vgg16",
    "fcn16s": "vgg16",
    "fcn32s": "vgg16",
    "deeplabv3plus_resnet101": "resnet101",
    "deeplabv3plus_mobilenetv2": "mobilenet_v2",
    "deeplabv3plus_xception": "xception",
}

# How to write each kind's file on a machine with internet (torchvision's ImageNet weights).
SAVE_HINTS = {
    "vgg16": 'torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict(), "vgg16.pth")',
    "resnet101": 'torch.save(torchvision.models.resnet101(weights="IMAGENET1K_V1").state_dict(), "resnet101.pth")',
    "mobilenet_v2": 'torch.save(torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").state_dict(), '
    '"mobilenet_v2.pth")',
    "xception": "torchvision has no Xception: save a state dict of sonoseg's AlignedXceptionBackbone "
    "(or jfzhang95's AlignedXception backbone, matched tensor by tensor in order)",
}


def backbone_kind(name: str) -> str | None:
    """The backbone kind of a network ('vgg16', 'resnet101', ...), or None without one."""
    return NETWORK_BACKBONES.get(name)


def has_backbone(name: str) -> bool:
    """Networks built on a backbone that ImageNet weights can initialise."""
    return backbone_kind(name) is not None


def weight_decay_is_auto(train_section: dict, network: str) -> bool:
    """Whether a network's weight decay is chosen on the validation set: its override's value
    when it has one, else the train section's."""
    override = train_section.get("overrides", {}).get(network, {})
    return override.get("weight_decay", train_section.get("weight_decay")) == "auto"


def pretrained_backbone_for(train_section: dict, network: str) -> str:
    """The weights file a network starts from ('' for none): a per-network override
    ``train.overrides.<network>.pretrained_backbone`` wins over ``train.pretrained_backbones.<kind>``."""
    kind = backbone_kind(network)
    override = train_section.get("overrides", {}).get(network, {})
    if "pretrained_backbone" in override:
        if kind is None:
            raise ValueError(
                f"config train.overrides.{network}.pretrained_backbone: {network} has no backbone "
                "that ImageNet weights can initialise"
            )
        return str(override["pretrained_backbone"] or "")
    if kind is None:
        return ""
    return str(train_section.get("pretrained_backbones", {}).get(kind) or "")
