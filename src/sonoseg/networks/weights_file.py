"""What a pretrained backbone's weights file holds, told from its tensors' names, without torch: the
workflow's planning imports no torch, and a file of the wrong kind (ResNet weights given for VGG16) was
found only when its training started, after every job before it had run. The training's own load
(sonoseg.networks.models.load_pretrained_backbone) still checks every tensor and its shape."""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Iterable
from pathlib import Path

from sonoseg.networks import catalog


def guess_kind(names: Iterable[str]) -> str | None:
    """Which backbone a state dict's tensor names (or any strings of its file) seem to hold: 'vgg16',
    'resnet101', 'mobilenet_v2', 'xception', 'a ResNet (not ResNet-101)', or None when they tell nothing."""
    names = set(names)
    if any(k.endswith("layer4.2.conv3.weight") for k in names):
        return "resnet101" if any(".22.conv3." in k for k in names) else "a ResNet (not ResNet-101)"
    if any(k.endswith("features.17.conv.0.0.weight") or k.endswith("17.conv.0.0.weight") for k in names):
        return "mobilenet_v2"
    if any(k.endswith(("features.28.weight", "classifier.6.weight")) for k in names) or "28.weight" in names:
        return "vgg16"
    if any("middle." in k or "block20." in k for k in names):
        return "xception"
    return None


def names_in_file(path: str | Path) -> set[str] | None:
    """The strings of a torch.save file's pickle (a state dict's tensor names among them), read from its zip
    archive's data.pkl without unpickling anything; None for a file of another format (torch's legacy
    format, not a zip, a file that cannot be read): the training's load says what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next((name for name in archive.namelist() if name.endswith("/data.pkl")), None)
            if pickled is None:
                return None
            data = archive.read(pickled)
        return {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None


def pretrained_problems(networks_and_files: Iterable[tuple[str, str]]) -> list[str]:
    """For each (network, weights file) a study trains from: a problem where the file's tensors name another
    backbone kind than the network's ('' files and networks without a backbone are skipped)."""
    problems = []
    for network, path in networks_and_files:
        kind = catalog.backbone_kind(network)
        names = names_in_file(path) if path and kind else None
        found = guess_kind(names) if names else None
        if found and found != kind:
            problems.append(
                f"{path}: holds {found} weights, but {network}'s backbone is {kind} (train.pretrained_backbones."
                f"{kind}, or train.overrides.{network}.pretrained_backbone). Expected, e.g.: {catalog.SAVE_HINTS[kind]}"
            )
    return problems
