"""The paper's reported numbers (Li et al., ISBI 2021, Tables 1-2 and section 4.2), for side-by-side
tables. Each network's numbers live in its catalog entry (sonoseg.networks.catalog); these are the tables' views."""

from sonoseg.networks import catalog

# network -> (label, Dice mean, Dice std, HD95 mean, HD95 std); NaN for extra rows not in the paper.
TABLE1 = catalog.paper_table("table1")
TABLE2 = catalog.paper_table("table2")

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
