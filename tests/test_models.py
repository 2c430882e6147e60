import copy as copying
import logging

import pytest
import torch

from sonoseg.errors import SonosegError
from sonoseg.networks import catalog, models

# docs/method.md ("Networks") and the paper's Table 2.
EXPECTED = {
    "unet": 17_267_393,
    "light_unet": 11_000_257,
    "lighter_unet_c128": 7_944_661,
    "lighter_unet_c64": 4_995_541,
    "lighter_unet_c32": 3_465_685,
    "lighter_unet_c16": 2_700_757,
    "lighter_unet_c8": 2_318_293,
    "lighter_unet_c4": 2_127_061,
    "lighter_unet_c2": 2_031_445,
    "lighter_unet_c1": 1_983_583,
    "fcn8s": 18_643_713,
    "fcn16s": 18_643_713,
    "fcn32s": 18_643_713,
    "deeplabv3plus_resnet101": 59_339_169,
    "deeplabv3plus_mobilenetv2": 5_810_913,
    "deeplabv3plus_xception": 54_700_177,  # the paper's "ResNet-101" count
    "slim_unet": 4_320_609,  # ours: U-net at half width (slim_unet(64) is U-net exactly)
}


# Beyond the paper (catalog table "beyond"): counted and tested in test_modern_networks.py.
AFTER_THE_PAPER = {"unext", "cmunext", "malunet", "egeunet"}


def test_registry_holds_exactly_the_study_networks():
    assert set(models.names()) == set(EXPECTED) | AFTER_THE_PAPER == set(catalog.BUILT_IN_NETWORKS)
    # Built from the catalog by name: a model file of a built-in network records no builder.
    assert all(models.builder_spec(name) is None for name in EXPECTED)


@pytest.fixture(scope="module")
def built():
    """Each registered network built once for the whole module (an FCN alone takes seconds: its VGG-16
    is built whole, classifier included, before the features are kept). Tests that change a model
    (weights, hooks) take a `fresh` copy instead."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = models.build(name)
        return cache[name]

    return get


def fresh_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copying.deepcopy(model)


@pytest.fixture
def fresh(built):
    """A private copy of a built network: the same weights as `models.build` after `torch.manual_seed(0)`."""
    return lambda name: fresh_copy(built(name))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_network(fresh, name):
    """One base over the registry: exact count, forward shape at two sizes, a backward pass that reaches
    every parameter, and a state-dict round trip that gives the same output."""
    model = fresh(name)
    assert models.count_parameters(model) == EXPECTED[name]
    model.eval()
    with torch.no_grad():
        for height, width in ((64, 64), (96, 128)):
            out = model(torch.rand(2, 3, height, width))
            assert out.shape == (2, 1, height, width) and torch.isfinite(out).all()
    model.train()
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    without_gradient = [n for n, p in model.named_parameters() if p.grad is None]
    assert not without_gradient, without_gradient[:5]
    model.zero_grad(set_to_none=True)
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    # The round trip into a copy whose every saved tensor was overwritten first (a second build of the
    # network, as a fresh model, would double this module's build time).
    copy = fresh_copy(model).eval()
    with torch.no_grad():
        for tensor in copy.state_dict().values():
            tensor.copy_(torch.rand_like(tensor.float()) if tensor.is_floating_point() else tensor + 1)
        assert not torch.equal(copy(x), model(x))
        copy.load_state_dict(model.state_dict())
        assert torch.equal(copy(x), model(x))


def test_backbone_counts_match_spec(built):
    from sonoseg.networks.models.deeplab import ASPP, Decoder, MobileNetV2Backbone, ResNet101Backbone

    assert models.count_parameters(ResNet101Backbone()) == 42_500_160
    assert models.count_parameters(MobileNetV2Backbone()) == 1_811_712
    assert models.count_parameters(ASPP(2048)) == 15_535_104
    assert models.count_parameters(Decoder(256, 1)) == 1_303_905
    assert models.count_parameters(built("fcn8s").backbone) == 14_714_688


def test_unknown_network_is_a_clear_error():
    with pytest.raises(SonosegError, match="unknown network 'unet3'"):
        models.build("unet3")


@pytest.fixture(scope="module")
def torchvision_state():
    """A whole torchvision network's state dict (weights=None, seeded), built once for the module:
    VGG-16 alone takes seconds, and four tests read it. Tests never change its tensors in place."""
    import torchvision

    builders = {
        "vgg16": torchvision.models.vgg16,
        "resnet101": torchvision.models.resnet101,
        "mobilenet_v2": torchvision.models.mobilenet_v2,
    }
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(kind: str) -> dict[str, torch.Tensor]:
        if kind not in cache:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                cache[kind] = builders[kind](weights=None).state_dict()
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def fake_weights(torchvision_state):
    """One fake ImageNet file per backbone kind: random tensors of the right shapes from torchvision's
    builders (weights=None), as docs/method.md tells a user to save the real ones (a new dict each call)."""

    def get(kind: str) -> dict[str, torch.Tensor]:
        if kind == "vgg16":  # torchvision's vgg16().features.state_dict()
            whole = torchvision_state(kind)
            return {k.removeprefix("features."): t for k, t in whole.items() if k.startswith("features.")}
        if kind in ("resnet101", "mobilenet_v2"):
            return dict(torchvision_state(kind))
        from sonoseg.networks.models.deeplab import AlignedXceptionBackbone

        return AlignedXceptionBackbone().state_dict()

    return get


def _first_weight(model) -> torch.Tensor:
    return next(t for k, t in model.backbone.state_dict().items() if k.endswith("weight"))


@pytest.mark.parametrize("kind", ["vgg16", "resnet101", "mobilenet_v2", "xception"])
def test_pretrained_backbone_per_kind(tmp_path, fresh, fake_weights, kind):
    network = next(n for n in models.names() if models.backbone_kind(n) == kind)
    state = fake_weights(kind)
    path = tmp_path / f"{kind}.pth"
    torch.save(state, path)
    model = fresh(network)
    assert models.backbone_kind_of(model) == kind
    models.load_pretrained_backbone(model, path, kind)
    first_source = next(t for k, t in state.items() if k.endswith("weight"))
    assert torch.equal(_first_weight(model), first_source)
    # Every backbone tensor came from the file: the last one too.
    assert torch.equal(
        list(model.backbone.state_dict().values())[-1].float(),
        [t for k, t in state.items() if not k.startswith(("fc.", "classifier.", "features.18."))][-1].float(),
    )


def test_full_torchvision_state_dicts_load_too(tmp_path, fresh, torchvision_state):
    for network, kind, first in (
        ("fcn8s", "vgg16", "features.0.weight"),  # vgg16().features[0].weight
        ("deeplabv3plus_mobilenetv2", "mobilenet_v2", "features.0.0.weight"),  # mobilenet_v2().features[0][0].weight
    ):
        source = torchvision_state(kind)
        path = tmp_path / f"{network}.pth"
        torch.save(source, path)
        model = fresh(network)
        models.load_pretrained_backbone(model, path)
        assert torch.equal(_first_weight(model), source[first])


def test_weights_of_another_backbone_kind_are_refused_clearly(tmp_path, fresh, fake_weights):
    vgg = tmp_path / "vgg16.pth"
    torch.save(fake_weights("vgg16"), vgg)
    resnet_network = fresh("deeplabv3plus_resnet101")
    with pytest.raises(
        SonosegError,
        match=r"pretrained_backbones\.resnet101.*does not match a resnet101 backbone"
        r".*looks like vgg16 weights.*resnet101\(weights=",
    ):
        models.load_pretrained_backbone(resnet_network, vgg)
    with pytest.raises(SonosegError, match="given as vgg16 weights, but this network's backbone is resnet101"):
        models.load_pretrained_backbone(resnet_network, vgg, "vgg16")


def test_pretrained_backbone_errors(tmp_path, fresh, fake_weights):
    model = fresh("fcn8s")
    with pytest.raises(SonosegError, match="file not found"):
        models.load_pretrained_backbone(model, tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(SonosegError, match="does not match a vgg16 backbone"):
        models.load_pretrained_backbone(model, wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(SonosegError, match="not a readable PyTorch state dict"):
        models.load_pretrained_backbone(model, garbage)
    with pytest.raises(SonosegError, match="no pretrained backbone"):
        models.load_pretrained_backbone(fresh("unet"), wrong)
    bad_shape = fake_weights("vgg16")
    bad_shape["0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad_shape, wrong)
    with pytest.raises(SonosegError, match=r"tensor 0.weight has shape \(64, 3, 5, 5\)"):
        models.load_pretrained_backbone(model, wrong)


# ----------------------------------------------------------------------------- the cited implementations


@pytest.mark.parametrize("name, skips", [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_fcn_skip_is_added_before_batchnorm(fresh, name, skips):
    """pochih/FCN-pytorch: a stage with a skip is bn(relu(deconv(x)) + skip)."""
    model = fresh(name).eval()
    seen = {}
    hooks = [
        model.backbone[23].register_forward_hook(lambda m, i, o: seen.__setitem__("pool4", o.clone())),
        model.backbone[16].register_forward_hook(lambda m, i, o: seen.__setitem__("pool3", o.clone())),
    ]
    for i, stage in enumerate(model.decoder):
        hooks.append(
            stage["deconv"].register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(f"deconv{i}", o.clone()))
        )
        hooks.append(
            stage["bn"].register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(f"bn_in{i}", inp[0].clone()))
        )
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    skip_of_stage = [seen["pool4"], seen["pool3"]][:skips]
    for i in range(5):
        expected = torch.relu(seen[f"deconv{i}"])
        if i < skips:
            expected = expected + skip_of_stage[i]
        assert torch.allclose(seen[f"bn_in{i}"], expected, atol=1e-5), f"stage {i}"


def test_deeplab_resnet101_layer4_multigrid_dilations():
    """jfzhang95: output stride 16, layer4 at stride 1 with dilations 2, 4, 8 (multi-grid 1, 2, 4 x 2)."""
    from sonoseg.networks.models.deeplab import ResNet101Backbone

    backbone = ResNet101Backbone().eval()
    layer4 = backbone.layer4
    assert [block.conv2.dilation for block in layer4] == [(2, 2), (4, 4), (8, 8)]
    assert [block.conv2.padding for block in layer4] == [(2, 2), (4, 4), (8, 8)]
    assert [block.conv2.stride for block in layer4] == [(1, 1)] * 3
    assert layer4[0].downsample[0].stride == (1, 1)
    assert all(
        block.conv2.dilation == (1, 1)
        for layer in (backbone.layer1, backbone.layer2, backbone.layer3)
        for block in layer
    )
    with torch.no_grad():
        high, low = backbone(torch.rand(1, 3, 64, 64))
    assert high.shape[-2:] == (4, 4) and low.shape[-2:] == (16, 16)


def test_deeplab_mobilenetv2_dilations_follow_the_running_stride():
    """jfzhang95: the 160-channel blocks run at stride 1 and dilation 1; only the 320-channel block is dilated 2."""
    from sonoseg.networks.models.deeplab import MobileNetV2Backbone

    backbone = MobileNetV2Backbone().eval()
    depthwise = {}
    for index, block in backbone.high.named_children():
        conv = block.conv[1][0]
        depthwise[int(index)] = (block.out_channels, conv.stride, conv.dilation, conv.padding)
    for index in (14, 15, 16):
        assert depthwise[index] == (160, (1, 1), (1, 1), (1, 1)), index
    assert depthwise[17] == (320, (1, 1), (2, 2), (2, 2))
    assert all(depthwise[i][2] == (1, 1) for i in range(4, 17))
    with torch.no_grad():
        high, low = backbone(torch.rand(1, 3, 64, 64))
    assert high.shape[-2:] == (4, 4) and low.shape[-2:] == (16, 16)


def test_catalog_knows_every_network_backbone_kind(built):
    """The workflow reads backbone kinds from the catalog (no torch); they must be the built ones."""
    for name in models.names():
        model = built(name)
        assert catalog.has_backbone(name) == (models.backbone_of(model) is not None), name
        assert catalog.backbone_kind(name) == catalog.CATALOG[name].backbone == models.backbone_kind_of(model), name


def test_a_final_sigmoid_is_warned_of_and_small_positive_logits_are_not(caplog):
    # Told by the operation that made the output: a fresh network's logits may all lie in [0, 1] by chance.
    from torch import nn

    from sonoseg.networks import models as built

    class Logits(nn.Module):
        def __init__(self, last):
            super().__init__()
            self.conv, self.last = nn.Conv2d(3, 1, 1), last

        def forward(self, x):
            return self.last(self.conv(x))

    class InPlace(Logits):  # changes its input in place: trains (the input needs no gradient), so it passes
        def forward(self, x):
            x.sub_(0.5)
            return self.conv(x)

    small_positive = Logits(lambda y: 0.1 + 0.01 * torch.tanh(y))  # in [0, 1], no sigmoid
    ending_in_sigmoid = Logits(torch.sigmoid)
    reshaped_after_it = Logits(lambda y: torch.sigmoid(y).flatten(1).view(y.shape))
    resized_after_it = Logits(
        lambda y: torch.nn.functional.interpolate(torch.sigmoid(y[..., ::2, ::2]), scale_factor=2)
    )
    hard = Logits(torch.nn.functional.hardsigmoid)
    cases = [(small_positive, False), (ending_in_sigmoid, True), (reshaped_after_it, True), (resized_after_it, True)]
    for model, warned in [*cases, (hard, True), (InPlace(None), False)]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            built.check_output("mine", model, 8)
        assert ("its output is a sigmoid's; remove that sigmoid" in caplog.text) is warned
        assert model.training  # left as it was given
