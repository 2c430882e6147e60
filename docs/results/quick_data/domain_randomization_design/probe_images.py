"""What the inference probes (input_blur.py, input_size_at_inference.py) share: the seed-0 U-net family
models of a finished quick study (results/quick/, run from the repository root), and every image with
a lesion of the development sets (the phantom's validation and test parts, pymust_far); no held-out
image is read."""
import torch

from sonoseg.data import split
from sonoseg.data.imageio import read_image, read_mask

R = "results/quick/"
SETS = ["phantom_val", "phantom_test", "pymust_far"]
FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]


def samples(name: str):
    if name.startswith("phantom"):
        part = name.split("_")[1]
        return split.samples_of_part(R + "data/manifest.csv", R + "data/split.csv", part, 0)
    return split.samples_of_part(R + f"external/{name}/manifest.csv", R + f"external/{name}/split.csv", "test", 0)


def model_path(network: str) -> str:
    return R + f"runs/{network}/fold0/seed0/model.pt"


def probe_images(network: str):
    """(set name, sample row, the image's RGB pixels, its mask) for every development image with a
    lesion, a set at a time."""
    torch.set_num_threads(2)
    for name in SETS:
        for _, row in samples(name).iterrows():
            truth = read_mask(row["mask"]).pixels
            if truth.sum():
                yield name, row, read_image(row["image"]).pixels, truth
