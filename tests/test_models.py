import pytest
import torch

from sonoseg import models
from sonoseg.errors import SonosegError

# SPEC.md section 1 and the paper's Table 2.
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
}


def test_registry_holds_exactly_the_study_networks():
    assert set(models.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count(name):
    assert models.count_parameters(models.build(name)) == EXPECTED[name]


def test_backbone_counts_match_spec():
    from sonoseg.models.deeplab import ASPP, Decoder, MobileNetV2Backbone, ResNet101Backbone
    assert models.count_parameters(ResNet101Backbone()) == 42_500_160
    assert models.count_parameters(MobileNetV2Backbone()) == 1_811_712
    assert models.count_parameters(ASPP(2048)) == 15_535_104
    assert models.count_parameters(Decoder(256, 1)) == 1_303_905
    assert models.count_parameters(models.build("fcn8s").backbone) == 14_714_688


@pytest.mark.parametrize("name", list(EXPECTED))
def test_forward_shape_at_two_sizes(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    with torch.no_grad():
        for height, width in ((64, 64), (96, 128)):
            out = model(torch.rand(2, 3, height, width))
            assert out.shape == (2, 1, height, width)
            assert torch.isfinite(out).all()


def test_unknown_network_is_a_clear_error():
    with pytest.raises(SonosegError, match="unknown network 'unet3'"):
        models.build("unet3")


def test_pretrained_backbone_from_torchvision_state_dict(tmp_path):
    from torchvision.models import mobilenet_v2
    source = mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2_imagenet.pth"
    torch.save(source.state_dict(), path)
    model = models.build("deeplabv3plus_mobilenetv2")
    models.load_pretrained_backbone(model, path)
    assert torch.equal(model.backbone.low[0][0].weight, source.features[0][0].weight)


def test_pretrained_backbone_errors(tmp_path):
    model = models.build("fcn8s")
    with pytest.raises(SonosegError, match="file not found"):
        models.load_pretrained_backbone(model, tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(SonosegError, match="does not match the backbone"):
        models.load_pretrained_backbone(model, wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(SonosegError, match="not a readable PyTorch state dict"):
        models.load_pretrained_backbone(model, garbage)
    with pytest.raises(SonosegError, match="no pretrained backbone"):
        models.load_pretrained_backbone(models.build("unet"), wrong)


def test_backbone_networks_are_the_torchvision_ones():
    for name in models.names():
        assert models.has_backbone(name) == (models.backbone_of(models.build(name)) is not None), name
