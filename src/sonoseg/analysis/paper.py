"""The paper's reported numbers (Li et al., ISBI 2021, Tables 1-2 and section 4.2), for side-by-side
tables. Each network's numbers live in its catalog entry (sonoseg.networks.catalog); these are the tables' views."""

from sonoseg.networks import catalog

# network -> (label, Dice mean, Dice std, HD95 mean, HD95 std); NaN for extra rows not in the paper.
TABLE1 = catalog.paper_table("table1")
TABLE2 = catalog.paper_table("table2")

# Section 4.2 ("Hyperparameter tuning strategy for U-net"): "We only show the mean Dice coefficient of
# U-net". The ladder's figures are U-net's, whatever network a study's ladder runs on (config ladder.network).
LADDER_NETWORK = "unet"

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

# Table 1's networks whose backbone the paper's implementation starts from ImageNet weights by default, with
# that implementation. The paper does not say how it initialised them: Section 3.1 says it uses "their
# publicly available Pytorch implementation" (footnotes 2-3 name the two repositories below), whose backbone
# constructors default to pretrained=True (pochih's VGGNet; jfzhang95's ResNet101 and MobileNetV2); Section
# 3.3 says only that "All trainings are performed with three different random initializations of model
# parameters". A row of ours whose backbone trained from scratch is marked against these (tables.SCRATCH_MARK).
BACKBONE_IMAGENET_BY_DEFAULT = {
    "fcn8s": "pochih/FCN-pytorch",
    "fcn16s": "pochih/FCN-pytorch",
    "fcn32s": "pochih/FCN-pytorch",
    "deeplabv3plus_resnet101": "jfzhang95/pytorch-deeplab-xception",
    "deeplabv3plus_mobilenetv2": "jfzhang95/pytorch-deeplab-xception",
}
