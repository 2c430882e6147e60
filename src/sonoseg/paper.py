"""The paper's reported numbers (Li et al., ISBI 2021, Tables 1-2 and section 4.2), for side-by-side tables."""

NOT_IN_PAPER = (float("nan"),) * 4

# network -> (label, Dice mean, Dice std, HD95 mean, HD95 std)
TABLE1 = {
    "deeplabv3plus_mobilenetv2": ("DeepLab v3+ (MobileNet)", 0.904, 0.003, 16.88, 0.47),
    "deeplabv3plus_resnet101": ("DeepLab v3+ (ResNet-101)", 0.922, 0.003, 14.32, 0.63),
    # Extra row: the backbone whose count (54.7 M) the paper printed for "ResNet-101".
    "deeplabv3plus_xception": ("DeepLab v3+ (Aligned Xception, extra)", *NOT_IN_PAPER),
    "fcn32s": ("FCN-32s", 0.909, 0.005, 15.89, 0.81),
    "fcn16s": ("FCN-16s", 0.920, 0.003, 14.88, 0.42),
    "fcn8s": ("FCN-8s", 0.924, 0.001, 14.37, 0.16),
    "unet": ("U-net", 0.929, 0.002, 13.92, 0.34),
}

TABLE2 = {
    "unet": ("U-net", 0.929, 0.002, 13.92, 0.34),
    "light_unet": ("Light U-net", 0.927, 0.001, 14.16, 0.47),
    "lighter_unet_c128": ("Lighter U-net @128", 0.928, 0.001, 13.93, 0.50),
    "lighter_unet_c64": ("Lighter U-net @64", 0.926, 0.001, 14.21, 0.24),
    "lighter_unet_c32": ("Lighter U-net @32", 0.926, 0.001, 14.51, 0.09),
    "lighter_unet_c16": ("Lighter U-net @16", 0.922, 0.003, 15.18, 0.43),
    "lighter_unet_c8": ("Lighter U-net @8", 0.921, 0.002, 15.14, 0.43),
    "lighter_unet_c4": ("Lighter U-net @4", 0.920, 0.003, 15.22, 0.58),
    "lighter_unet_c2": ("Lighter U-net @2", 0.920, 0.001, 15.52, 0.19),
    "lighter_unet_c1": ("Lighter U-net @1", 0.917, 0.001, 15.98, 0.23),
    # Extra row, ours (not in the paper): U-net at half width, light in CPU time (README, "Deploy").
    "slim_unet": ("Slim U-net (ours, extra)", *NOT_IN_PAPER),
}

# Parameter counts the paper printed (Table 2, and section 4.1 for the others).
PRINTED_PARAMETERS = {
    "deeplabv3plus_resnet101": "54.7 M (the Aligned-Xception count; ResNet-101 has 59,339,169)",
    "fcn8s": "18.6 M",
    "fcn16s": "18.6 M",
    "fcn32s": "18.6 M",
}

# Section 4.2: U-net mean test Dice after each cumulative step.
LADDER = {
    "baseline": 0.855,
    "augmentation": 0.877,
    "dice_loss": 0.891,
    "adam": 0.911,
    "lr_plateau": 0.917,
    "batch8": 0.928,
    "weight_decay": 0.929,
}
