"""The networks' bilinear resizing (sonoseg.networks.bilinear): the separable backward that training
on CUDA uses under deterministic algorithms gives PyTorch's forward bit for bit and its gradient to
rounding, deterministically; on the CPU every network resizes exactly as F.interpolate does."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sonoseg.networks import bilinear, models

CASES = [
    ((2, 3, 5, 7), dict(scale_factor=2, align_corners=True)),
    ((2, 3, 5, 7), dict(scale_factor=2, align_corners=False)),
    ((1, 4, 3, 4), dict(size=(13, 9), align_corners=True)),
    ((1, 4, 8, 8), dict(size=(3, 5), align_corners=False)),  # shrinking too (DeepLab's image pool grows 1x1)
    ((1, 2, 1, 1), dict(size=(6, 4), align_corners=True)),
]


def gradient(fn, x, grad_out):
    x = x.detach().requires_grad_(True)
    y = fn(x)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    return y.detach(), gx


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_separable_resize_is_pytorchs_forward_and_gradient(shape, kwargs):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    reference = F.interpolate(x, mode="bilinear", **kwargs)
    grad_out = torch.randn_like(reference)
    y_ref, g_ref = gradient(lambda t: F.interpolate(t, mode="bilinear", **kwargs), x, grad_out)
    y, g = gradient(lambda t: bilinear.separable_resize(t, **kwargs), x, grad_out)
    assert torch.equal(y, y_ref)  # the same native kernel
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    # deterministic: a second backward gives the same bits
    assert torch.equal(gradient(lambda t: bilinear.separable_resize(t, **kwargs), x, grad_out)[1], g)


def test_separable_resize_refuses_neither_or_both_sizes():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="exactly one"):
        bilinear.separable_resize(x, align_corners=True)
    with pytest.raises(ValueError, match="exactly one"):
        bilinear.separable_resize(x, size=(8, 8), scale_factor=2, align_corners=True)


def test_on_the_cpu_resize_is_f_interpolate_even_under_deterministic_algorithms():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 6)
    grad_out = torch.randn(2, 3, 12, 12)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert not bilinear.separable_wanted(x)
        ours = gradient(lambda t: bilinear.resize(t, scale_factor=2, align_corners=False), x, grad_out)
    finally:
        torch.use_deterministic_algorithms(was)
    theirs = gradient(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear"), x, grad_out)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


# Every network that upsamples bilinearly (the rest: FCN's transposed convolutions, Slim U-net's).
UPSAMPLING = ["lighter_unet_c1", "deeplabv3plus_mobilenetv2", "unext", "cmunext", "malunet", "egeunet"]


@pytest.mark.parametrize("name", UPSAMPLING)
def test_each_network_trains_alike_through_the_separable_path(monkeypatch, name):
    """Forced on the CPU, the separable path gives a network's output bit for bit and its parameters'
    gradients to rounding: every bilinear call site of the network goes through `resize`."""
    torch.manual_seed(0)
    model = models.build(name).train()
    x = torch.rand(2, 3, 32, 32)

    def step():
        torch.manual_seed(1)  # the same dropout masks in both steps
        model.zero_grad(set_to_none=True)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain_out, plain_grads = step()
    calls = []
    monkeypatch.setattr(bilinear, "separable_wanted", lambda t: calls.append(1) or True)
    model.load_state_dict(state)  # BatchNorm's running statistics moved in the first step
    out, grads = step()
    assert calls, f"{name}: no bilinear resize went through sonoseg.networks.bilinear"
    assert torch.equal(out, plain_out)
    assert grads.keys() == plain_grads.keys()
    # Rounding differs in the resize's backward alone, and BatchNorm's backward amplifies it where a
    # gradient nearly cancels (a conv bias just before BatchNorm has a gradient of rounding alone):
    # each tensor's error is measured against its own norm plus a millionth of the whole gradient's.
    whole = torch.cat([g.flatten() for g in plain_grads.values()]).norm()
    for key, grad in grads.items():
        error = (grad - plain_grads[key]).norm()
        assert error <= 1e-3 * plain_grads[key].norm() + 1e-6 * whole, f"{name} {key}: gradient error {error:.2e}"


def test_no_network_resizes_around_the_helper():
    """A call of F.interpolate or nn.Upsample left in a network would scatter again on CUDA."""
    folder = Path(models.__file__).parent
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(folder.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b(F\.interpolate|nn\.Upsample|functional\.interpolate)\(", line.split("#")[0])
    ]
    assert not offenders, f"resize through sonoseg.networks.bilinear: {offenders}"
