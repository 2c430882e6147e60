"""Domain-randomization augmentations for the U-net family (design runs; development sets only).

Each variant wraps the adopted ultrasound augmentation (sonoseg.training.ultrasound_augment) with one
more transform, drawn from the training's own seeded noise generator, applied to half of the samples:
  gin      a random shallow convolutional network remaps the image (GIN: Ouyang et al., "Causality-
           inspired single-source domain generalization for medical image segmentation", IEEE TMI
           2022): 4 layers of random 1x1 or 3x3 kernels, leaky ReLU, mixed with the image by a random
           weight and scaled back to the image's contrast;
  speckle  coarse speckle: zero-mean noise blurred to a random grain (0.5-1.5 px sd at the input
           size) added with an sd drawn in [0, 0.12];
  base     nothing more (the adopted augmentation);
  bce_dice the adopted augmentation, the loss 0.5 BCE + soft Dice instead of soft Dice alone;
  zoom_in, zoom_wide
           half the samples also zoomed about the centre by a factor log-uniform in [1, 2] or
           [0.7, 2], on top of the paper's geometric augmentation (its scale 0.8-1.2 per axis, half
           the samples): the development scans' lesions are twice the phantom's in area at 32 px.
From the repository root, after an fp32 quick study in results/quick:
   PYTHONPATH=docs/results/quick_data:src .venv/bin/python \
       docs/results/quick_data/domain_randomization_design/drstudy.py OUT gin,speckle 0,1 [NETWORKS]
"""
import sys
from pathlib import Path
import design_runs as D  # docs/results/quick_data: the training and the development sets' scoring
OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)
P = 0.5


def gin(x, gen, layers=4, width=2):
    import torch, torch.nn.functional as F
    n, c, h, w = x.shape
    g = x.mean(1, keepdim=True)
    mean = g.mean((2, 3), keepdim=True)
    z = g - mean
    out, cin = z, 1
    for i in range(layers):
        k = (1, 3)[int(torch.randint(0, 2, (1,), generator=gen, device=x.device))]
        cout = 1 if i == layers - 1 else width
        weight = torch.randn(n * cout, cin, k, k, generator=gen, device=x.device, dtype=x.dtype)
        bias = torch.randn(n * cout, generator=gen, device=x.device, dtype=x.dtype)
        out = F.conv2d(out.reshape(1, n * cin, h, w), weight, bias, padding=k // 2, groups=n).reshape(n, cout, h, w)
        if i < layers - 1:
            out = F.leaky_relu(out, 0.2)
        cin = cout
    out = out - out.mean((2, 3), keepdim=True)
    alpha = torch.rand(n, 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)
    mixed = alpha * out + (1 - alpha) * z
    norm = lambda t: t.flatten(1).norm(dim=1)[:, None, None, None].clamp(min=1e-6)  # noqa: E731
    mixed = mixed * norm(z) / norm(mixed)
    y = (mean + mixed).clamp(0, 1).expand(n, c, h, w)
    on = torch.rand(n, 1, 1, 1, generator=gen, device=x.device) < P
    return torch.where(on, y, x)


def speckle(x, gen):
    import torch
    from sonoseg.training.ultrasound_augment import _blur
    n, c, h, w = x.shape
    u = torch.rand(n, 4, generator=gen, device=x.device, dtype=x.dtype)
    z = torch.randn(n, 1, h, w, generator=gen, device=x.device, dtype=x.dtype)
    z = _blur(z, 0.5 + u[:, 0], 0.5 + u[:, 1])
    z = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), keepdim=True).clamp(min=1e-6)
    y = (x + 0.12 * u[:, 2, None, None, None] * z).clamp(0, 1)
    return torch.where((u[:, 3] < P)[:, None, None, None], y, x)


def zoomed_draw(low, high):
    """The paper's geometric draw (sonoseg.training.train.draw_augmentation) with half the samples
    also zoomed about the image centre by a factor log-uniform in [low, high] (> 1 magnifies)."""
    import math
    import torch
    from sonoseg.training import train
    paper = train.draw_augmentation  # the original, before the patch

    def draw(n, generator):
        theta = paper(n, generator).clone()  # the inverse maps (output -> input), as grid_sample reads them
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        zoom = torch.exp(math.log(low) + u[:, 0] * math.log(high / low))
        zoom = torch.where(u[:, 1] < 0.5, zoom, torch.ones_like(zoom)).float()
        theta[:, :, :2] /= zoom[:, None, None]  # magnified by z: the inverse's linear part / z
        return theta
    return draw


ZOOMS = {"zoom_in": (1.0, 2.0), "zoom_wide": (0.7, 2.0)}  # geometric variants: the zoom factor's range
VARIANTS = {"gin": gin, "speckle": speckle, "base": None, "bce_dice": None, "zoom_in": None, "zoom_wide": None}
RECIPE_CHANGES = {"bce_dice": {"loss": "bce_dice"}}  # variants that change the recipe, not the augmentation


def job(args):
    net, variant, seed = args
    import dataclasses
    from sonoseg.training import train
    extra = VARIANTS[variant]
    if extra is not None:
        adopted = train.apply_ultrasound
        train.apply_ultrasound = lambda x, draws, noise, masks=None: extra(adopted(x, draws, noise, masks), noise)
    if variant in ZOOMS:
        train.draw_augmentation = zoomed_draw(*ZOOMS[variant])
    recipe = D.quick_recipe(net)
    assert recipe.ultrasound_augment
    recipe = dataclasses.replace(recipe, **RECIPE_CHANGES.get(variant, {}))
    D.train_and_score(net, seed, recipe, f"{variant}__{net}_seed{seed}", OUT, variant)


if __name__ == "__main__":
    variants = sys.argv[2].split(","); seeds = [int(s) for s in sys.argv[3].split(",")]
    nets = sys.argv[4].split(",") if len(sys.argv) > 4 else D.FAMILY
    D.run_all(job, [(n, v, s) for s in seeds for v in variants for n in nets if not (OUT / f"{v}__{n}_seed{s}.per_image.csv").exists()])
