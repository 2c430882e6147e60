"""The network registry: every network of the study is built by name from its catalog entry
(``sonoseg.networks.catalog``: ``module:function`` and its arguments), so a network of the user's own is
built the same way as the paper's."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.networks.catalog import SAVE_HINTS, backbone_kind, has_backbone  # noqa: F401 - part of the registry's interface
from sonoseg.networks.weights_file import guess_kind

log = logging.getLogger(__name__)


def names() -> list[str]:
    return catalog.networks()


def resolve_builder(spec: str) -> Callable[..., nn.Module]:
    """``module:function`` -> the function (the module must be importable)."""
    module_name, _, function = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SonosegError(f"network builder {spec!r}: cannot import {module_name!r} ({exc})") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise SonosegError(f"network builder {spec!r}: {module_name} has no function {function!r}")
    return builder


def build(name: str, builder: str | None = None) -> nn.Module:
    """The network ``name`` with fresh weights. ``builder`` (``module:function``, as a model file of a
    network of the user's own records it) builds a network the catalog does not know."""
    if name in catalog.CATALOG and catalog.CATALOG[name].is_network:
        item = catalog.CATALOG[name]
        return _called(item.builder, item.arguments)
    if builder:
        return _called(builder, ())
    raise SonosegError(f"unknown network {name!r}; known networks: {', '.join(names())}")


def _called(spec: str, arguments: tuple) -> nn.Module:
    """The builder's network; whatever goes wrong inside a builder (a user's, most often), the error
    names it."""
    function = resolve_builder(spec)
    try:
        model = function(*arguments)
    except Exception as exc:
        hint = " (a builder is a function of no arguments: docs/extending.md)" if isinstance(exc, TypeError) else ""
        raise SonosegError(f"network builder {spec!r} failed: {type(exc).__name__}: {exc}{hint}") from exc
    if not isinstance(model, nn.Module):
        raise SonosegError(f"network builder {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_output(name: str, model: nn.Module, size: int, device: torch.device | None = None) -> None:
    """A network of the user's own, before it is trained: for a batch of RGB images of ``size`` pixels it
    must return, in eval mode, one tensor of logits shaped (batch, 1, size, size). The losses flatten
    what they get, so a squeezed map or 16 channels at a quarter of the size would train on scrambled
    pixels, unseen; the built-in networks are tested for it (tests/test_models.py). A network whose
    output is a sigmoid's gets a warning: sonoseg applies the sigmoid, and every pixel would be lesion. It
    runs on ``device``, where the network will train (a network of GPU-only kernels), and moves the network
    there."""
    if name in catalog.BUILT_IN_NETWORKS:
        return
    spec = catalog.CATALOG[name].builder if name in catalog.CATALOG else name
    device = device or torch.device("cpu")
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))  # the global RNG untouched
    was_training = model.training
    try:
        # With gradients (the parameters' alone: a network may change its input in place): the operation that
        # made the output tells a final sigmoid (below).
        with torch.enable_grad():
            output = model.to(device).eval()(images.to(device))
    except Exception as exc:
        raise SonosegError(
            f"network {name!r} ({spec}) fails on images shaped (2, 3, {size}, {size}) on {device}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    model.train(was_training)
    expected = "one tensor of logits shaped (batch, 1, height, width) at the input's size (docs/extending.md)"
    if not isinstance(output, torch.Tensor):
        hint = (
            "; for a dict such as torchvision's {'out': ...}, return its 'out' from a wrapper"
            if isinstance(output, dict)
            else ""
        )
        raise SonosegError(f"network {name!r} ({spec}) returns a {type(output).__name__}, not {expected}{hint}")
    if tuple(output.shape) != (2, 1, size, size):
        raise SonosegError(
            f"network {name!r} ({spec}) maps images shaped (2, 3, {size}, {size}) to {tuple(output.shape)}: "
            f"sonoseg needs (2, 1, {size}, {size}), {expected}"
        )
    # A final sigmoid, by the last operation before any reshaping or resizing (the value range alone also caught
    # a fresh network whose logits happen to be small and positive).
    if _last_operation(output).startswith(SIGMOIDS):
        log.warning(
            "network %r (%s): its output is a sigmoid's; remove that sigmoid: sonoseg applies the sigmoid itself "
            "(docs/extending.md), and every pixel would be lesion",
            name,
            spec,
        )


# Operations that reshape, copy or resize (autograd's names): a sigmoid before them is still the network's last.
RESHAPING = (
    *("View", "Reshape", "Unsafe", "Squeeze", "Unsqueeze", "Permute", "Transpose", "Clone", "Expand", "Slice"),
    *("Select", "Index", "Upsample", "Interpolate", "ToCopy"),
)
SIGMOIDS = ("Sigmoid", "Hardsigmoid")  # what maps logits to [0, 1], as sonoseg's own sigmoid does


def _last_operation(output: torch.Tensor) -> str:
    """The autograd name of the last operation that made ``output`` other than reshaping or resizing it ('' for
    none)."""
    step = output.grad_fn
    while step is not None and type(step).__name__.startswith(RESHAPING) and step.next_functions:
        step = step.next_functions[0][0]
    return type(step).__name__ if step is not None else ""


def builder_source(name: str) -> tuple[str, str | None]:
    """How the catalog's network ``name`` is built (``module:function`` and its arguments) and the file
    that function is in (None for a module without one)."""
    item = catalog.CATALOG[name]
    module = importlib.import_module(item.builder.partition(":")[0])
    return f"{item.builder}{tuple(item.arguments)!r}", getattr(module, "__file__", None)


def builder_spec(name: str) -> str | None:
    """What a model file records to rebuild a network that is not built in (None for built-in ones)."""
    if name in catalog.BUILT_IN_NETWORKS:
        return None
    return catalog.CATALOG[name].builder if name in catalog.CATALOG else None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm affine included, running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def backbone_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "backbone", None)


def backbone_kind_of(model: nn.Module) -> str | None:
    """The kind of a built network's backbone ('vgg16', 'resnet101', ...), or None."""
    return getattr(model, "backbone_kind", None) if backbone_of(model) is not None else None


def load_pretrained_backbone(model: nn.Module, path: str | Path, kind: str | None = None) -> None:
    """Load a local weights file (e.g. torchvision's ImageNet weights) into the network's backbone.

    What each kind reads (docs/method.md, "Pretrained backbones"): vgg16 a torchvision VGG16 state
    dict or its ``features``' state dict; resnet101 and mobilenet_v2 a torchvision classifier's
    state dict (its classifier, and MobileNetV2's final 1280-channel conv, are skipped); xception
    a state dict of our AlignedXceptionBackbone, or one whose tensors come in the same order and
    shapes (jfzhang95's AlignedXception). ``kind``, when given, is the kind the config says the
    file holds; it must be the network's. Every backbone tensor must be found with its shape.
    """
    path = Path(path)
    own_kind = backbone_kind_of(model)
    if own_kind is None:
        raise SonosegError(f"pretrained backbone {path}: this network has no pretrained backbone to load")
    key = f"train.pretrained_backbones.{own_kind}"
    if kind is not None and kind != own_kind:
        raise SonosegError(f"{path}: given as {kind} weights, but this network's backbone is {own_kind}")
    if not path.is_file():
        raise SonosegError(f"{key}: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise SonosegError(f"{key}: {path} is not a readable PyTorch state dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SonosegError(f"{key}: {path} does not hold a state dict (a mapping of names to tensors)")
    backbone = backbone_of(model)
    own = backbone.state_dict()
    mapped = _map_backbone_keys(state, own, own_kind)
    missing = [k for k in own if k not in mapped]
    if missing:
        looks_like = guess_kind(state)
        hint = f"; the file looks like {looks_like} weights" if looks_like and looks_like != own_kind else ""
        raise SonosegError(
            f"{key}: {path} does not match a {own_kind} backbone: {len(missing)} of {len(own)} tensors missing "
            f"(first: {missing[:3]}){hint}. Expected, e.g.: {SAVE_HINTS[own_kind]}"
        )
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise SonosegError(
                f"{key}: {path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the {own_kind} backbone needs {tuple(own[name].shape)}"
            )
    backbone.load_state_dict(mapped, strict=True)


def _rename_vgg16(key: str) -> str | None:
    if key.startswith("classifier."):
        return None
    return key.removeprefix("features.")


def _rename_resnet101(key: str) -> str | None:
    if key.startswith("fc."):
        return None
    for source, ours in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if key.startswith(source):
            return ours + key[len(source) :]
    return key


def _rename_mobilenet_v2(key: str) -> str | None:
    if key.startswith("classifier."):
        return None
    rest = key.removeprefix("features.")
    index, _, tail = rest.partition(".")
    if not index.isdigit():
        return rest
    index = int(index)
    if index >= 18:  # the final 1280-channel conv is not part of the DeepLab backbone
        return None
    # nn.Sequential slices keep their indices: our low is features 0-3, high features 4-17.
    return f"low.{index}.{tail}" if index < 4 else f"high.{index}.{tail}"


_RENAMERS = {"vgg16": _rename_vgg16, "resnet101": _rename_resnet101, "mobilenet_v2": _rename_mobilenet_v2}


def _map_backbone_keys(state: dict, own: dict, kind: str) -> dict:
    """The file's tensors under our backbone's names (missing ones simply absent)."""
    for prefix in ("", "backbone.", "module.", "module.backbone."):
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if set(own) <= set(stripped):
            return {k: stripped[k] for k in own}
    if kind in _RENAMERS:
        renamed = {}
        for source, tensor in state.items():
            name = _RENAMERS[kind](source)
            if name is not None:
                renamed[name] = tensor
        return {k: renamed[k] for k in own if k in renamed}
    # Xception: no torchvision model names its tensors; take them in order when count and shapes
    # agree (jfzhang95's AlignedXception, alone or as the backbone of its DeepLab checkpoint).
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    source = [v for k, v in state.items() if not k.startswith(("fc.", "classifier."))]
    if len(source) == len(own) and all(tuple(a.shape) == tuple(b.shape) for a, b in zip(source, own.values())):
        return dict(zip(own, source))
    return {}


def code_record(name: str, model: nn.Module, builder: str | None = None) -> dict:
    """What a model file records of the code that built its network, to tell at serving whether the network
    is built as it was trained: the architecture as built (a digest of its repr: layers, channels, kernels,
    activations) and each of its code's files (catalog.network_code_digests: a built-in network's module and the
    network modules it imports, or a user's network's files);
    ``builder``: the one a model file records, where the catalog does not know the network (serving)."""
    import hashlib

    record = {"architecture": hashlib.sha256(repr(model).encode()).hexdigest()[:16]}
    spec = builder or builder_spec(name)
    if spec or name in catalog.BUILT_IN_NETWORKS:  # a built-in network's module too: a change in forward alone
        record["files"] = catalog.network_code_digests(name, spec)
    return record


def code_changes(name: str, model: nn.Module, recorded: dict | None, builder: str | None = None) -> list[str]:
    """How the code that builds ``name`` now differs from what a model file recorded at training (``recorded``,
    code_record's; None for a file from before it was recorded: nothing to compare): the architecture, and the
    user's code files changed, added or gone."""
    if not recorded:
        return []
    now = code_record(name, model, builder)
    changes = []
    if recorded.get("architecture") and recorded["architecture"] != now["architecture"]:
        changes.append("the network as built now differs (its layers)")
    if "files" not in recorded:  # a file from before its network's files were recorded: the architecture alone
        return changes
    before, after = recorded.get("files") or {}, now.get("files") or {}
    for files, what in (
        (sorted(f for f in before.keys() & after.keys() if before[f] != after[f]), "changed"),
        (sorted(before.keys() - after.keys()), "no longer imported"),
        (sorted(after.keys() - before.keys()), "newly imported"),
    ):
        if files:
            changes.append(f"{', '.join(files)} {what}")
    return changes
