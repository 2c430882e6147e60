"""UNeXt, CMUNeXt, MALUNet and EGE-UNet, re-implemented from their authors' code (docs/modern_networks.md):
one test base parametrised over the four builders, as segmentation_models_pytorch tests its models,
and a few tests of what each re-implementation rewrote."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonoseg.networks.models.cmunext import cmunext
from sonoseg.networks.models.egeunet import SIDE_WEIGHTS, egeunet
from sonoseg.networks.models.malunet import ExternalAttention, malunet
from sonoseg.networks.models.unext import axial_shift, unext
from sonoseg.serving import cost, export
from sonoseg.training.train import soft_dice_loss

# name: (builder, the authors' count at their defaults with one output channel, sonoseg GFLOPs at 256x256).
# Counts from running the authors' code (docs/modern_networks.md has the commits); GFLOPs as
# sonoseg.serving.cost counts them (multiply and add separately).
NETWORKS = {
    "unext": (unext, 1_471_921, 1.1240),
    "cmunext": (cmunext, 3_149_185, 14.4613),
    "malunet": (malunet, 177_943, 0.1655),
    "egeunet": (egeunet, 53_374, 0.1442),  # side heads kept: the bridges need their masks
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return NETWORKS[name][0]()


def discs(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n masks (n, 1, size, size), each one disc of random centre and radius."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=generator)
    radius = torch.randint(size // 6, size // 3, (n,), generator=generator)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    return (d2 <= radius[:, None, None] ** 2).float().unsqueeze(1)


def assert_close_to_scale(got, expected, relative: float) -> None:
    """max |got - expected| <= relative * max(1, max |expected|). A freshly initialised EGE-UNet (and,
    less so, MALUNet) has logits of about +-30 (the authors' fan-out init gives the 1-channel output
    conv weights of std 1.4) after a chain of some 30 norm layers, where float32 rounding alone moves
    them by ~1e-4 (torch fp32 against fp64 differs as much): hence a bound relative to the scale."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert np.abs(got - expected).max() <= relative * max(1.0, np.abs(expected).max())


def onnx_logits(model: torch.nn.Module, path, size: int, batch: np.ndarray) -> np.ndarray:
    """The bare network (logits, no sigmoid) exported with sonoseg's opset, names and dynamic batch,
    by the TorchScript exporter: seconds, where the dynamo exporter of sonoseg.serving.export takes tens of
    seconds per network (test_sonoseg_export_matches_torch runs that one)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (torch.rand(2, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=export.OPSET,
            input_names=[export.INPUT_NAME],
            output_names=["logits"],
            dynamic_axes={export.INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
        )
    session = export.onnx_session(path, threads=1)
    return session.run(["logits"], {export.INPUT_NAME: batch})[0]


@pytest.mark.parametrize("name", list(NETWORKS))
class TestModernNetwork:
    def test_parameter_count_is_the_authors(self, name):
        model = build(name)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == NETWORKS[name][1]

    def test_forward_shape_at_small_sizes(self, name):
        model = build(name)
        for train in (True, False):
            model.train(train)
            for size in (32, 64):
                with torch.no_grad():
                    out = model(torch.rand(2, 3, size, size))
                assert isinstance(out, torch.Tensor)  # one output, in training mode too
                assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()

    def test_eval_is_deterministic_and_per_image(self, name):
        """Eval: the same input gives the same logits, and an image's logits do not depend on the
        others of its batch (BatchNorm on running statistics)."""
        model = build(name).eval()
        x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            first, second, alone = model(x), model(x), model(x[1:2])
        assert torch.equal(first, second)
        assert_close_to_scale(alone, first[1:2], 1e-4)

    def test_onnx_matches_torch(self, name, tmp_path):
        """Opset 18, dynamic batch (exported at batch 2, run at 3): ONNX Runtime within 1e-4 of torch
        in probability (sonoseg export's own check), and in logits within 1e-4 of their scale
        (assert_close_to_scale)."""
        model = build(name).eval()
        x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        got = onnx_logits(model, tmp_path / f"{name}.onnx", 32, x.numpy())
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape == (3, 1, 32, 32)
        sigmoid = lambda a: 1 / (1 + np.exp(-a.astype(np.float64)))  # noqa: E731
        assert np.abs(sigmoid(got) - sigmoid(expected)).max() <= 1e-4
        assert_close_to_scale(got, expected, 1e-4)

    @pytest.mark.slow
    def test_sonoseg_export_matches_torch(self, name, tmp_path):
        """The network through sonoseg.serving.export's own exporter (dynamo, sigmoid in the graph)."""
        model = build(name).eval()
        path = export.export_network(model, None, 32, tmp_path / f"{name}.onnx")
        x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        got = export.run_session(export.onnx_session(path, threads=1), x.numpy())
        with torch.no_grad():
            expected = torch.sigmoid(model(x)).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    def test_training_steps_reduce_soft_dice(self, name):
        """Ten Adam steps on one batch of discs (image: the disc plus noise) lower sonoseg's soft-Dice
        loss; the first backward pass reaches every parameter."""
        model = build(name).train()
        generator = torch.Generator().manual_seed(0)
        y = discs(4, 32, generator)
        x = 0.6 * y.expand(-1, 3, -1, -1) + 0.4 * torch.rand(4, 3, 32, 32, generator=generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for step in range(10):
            optimizer.zero_grad()
            loss = soft_dice_loss(model(x), y)
            loss.backward()
            if step == 0:
                missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
                assert not missing, missing[:5]
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.05, losses

    def test_gflops_at_paper_size_are_the_documented(self, name):
        assert cost.forward_gflops(build(name), 256) == pytest.approx(NETWORKS[name][2], abs=1e-4)


def test_paper_input_size():
    """256 x 256, the papers' input size (the cheapest network here: all four downsample alike)."""
    with torch.no_grad():
        out = build("egeunet").eval()(torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 1, 256, 256) and torch.isfinite(out).all()


def rolled_shift(x: torch.Tensor, dim: int, groups: int = 5) -> torch.Tensor:
    """The authors' shift (UNeXt archs.py, shiftmlp.forward): pad, roll each channel chunk, crop."""
    pad = groups // 2
    h, w = x.shape[2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    chunks = torch.chunk(padded, groups, 1)
    rolled = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
    return rolled.narrow(2, pad, h).narrow(3, pad, w)


@pytest.mark.parametrize("channels,size", [(160, 2), (128, 4), (256, 1), (10, 5)])
def test_unext_shift_is_the_authors_pad_roll_crop(channels, size):
    x = torch.rand(2, channels, size, size + 1)
    for dim in (2, 3):
        assert torch.equal(axial_shift(x, dim), rolled_shift(x, dim))


def test_malunet_memories_start_transposed_but_are_two_parameters():
    """The authors' second memory is a view of the first's storage until .cuda() copies them apart;
    ours are two tensors from the start, equal up to the transpose."""
    model = malunet()
    blocks = [m for m in model.modules() if isinstance(m, ExternalAttention)]
    assert len(blocks) == 6
    for block in blocks:
        key, value = block.memory_key.weight, block.memory_value.weight
        assert torch.equal(key, value.permute(1, 0, 2)) and key.data_ptr() != value.data_ptr()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.encoder4[0].memory_key.weight.add_(1.0)
    assert torch.equal(twin.encoder4[0].memory_value.weight, blocks[0].memory_value.weight)


def test_egeunet_side_outputs():
    """forward gives the final logits only; forward_with_side_outputs adds the five side logits at the
    input size, deepest first, one per weight of the authors' deep-supervision loss."""
    model = build("egeunet").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, sides = model.forward_with_side_outputs(x)
        assert torch.equal(logits, model(x))
    assert len(sides) == len(SIDE_WEIGHTS) == 5
    assert all(s.shape == (2, 1, 64, 64) for s in sides)
