"""Facts about the study's networks that the workflow needs without importing torch."""


def has_backbone(name: str) -> bool:
    """Networks built on a torchvision backbone (the ones ImageNet weights can initialise)."""
    return name.startswith(("fcn", "deeplabv3plus"))
