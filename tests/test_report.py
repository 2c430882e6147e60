import math

import pandas as pd
import pytest

from sonoseg import paper, report


def runs():
    return pd.DataFrame([
        {"network": "unet", "seed": 0, "dice": 0.6, "hd95_px": 9.0, "hd95_penalized": 1},
        {"network": "unet", "seed": 1, "dice": 0.7, "hd95_px": 8.0, "hd95_penalized": 0},
        {"network": "fcn8s", "seed": 0, "dice": 0.5, "hd95_px": 12.0, "hd95_penalized": 0},
        {"network": "fcn8s", "seed": 1, "dice": 0.5, "hd95_px": 14.0, "hd95_penalized": 0},
    ])


def test_table1_rows_in_paper_order_with_mean_std_over_seeds():
    table = report.network_table(runs(), paper.TABLE1, ["unet", "fcn8s"])
    assert table["network"].tolist() == ["fcn8s", "unet"]  # the paper's row order
    unet = table.set_index("network").loc["unet"]
    assert unet["dice_mean"] == pytest.approx(0.65) and unet["dice_std"] == pytest.approx(math.sqrt(0.005))
    assert unet["hd95_penalized"] == 1 and unet["parameters"] == 17_267_393
    assert unet["paper_dice_mean"] == 0.929 and unet["paper_hd95_mean"] == 13.92


def test_tables_list_only_what_the_study_ran():
    table = report.network_table(runs()[runs()["network"] == "unet"], paper.TABLE2, ["unet"])
    assert table["network"].tolist() == ["unet"]


def test_weight_decay_choice_is_the_lowest_validation_loss(tmp_path):
    histories = {}
    for decay, losses in ((0.01, [0.5, 0.4, 0.45]), (0.0, [0.6, 0.3, 0.35]), (0.001, [0.3, 0.5, 0.5])):
        path = tmp_path / f"{decay}.csv"
        pd.DataFrame({"epoch": [1, 2, 3], "val_loss": losses, "val_dice": [0.1, 0.2, 0.3]}).to_csv(path, index=False)
        histories[decay] = path
    chosen, table = report.select_weight_decay(histories)
    # 0.0 and 0.001 tie at 0.3: the larger decay wins the tie.
    assert chosen == 0.001
    assert table.iloc[0]["best_epoch"] == 1 and len(table) == 3


def test_hd95_in_mm_appears_when_a_pixel_spacing_was_given():
    with_mm = runs().assign(hd95_mm=lambda f: f["hd95_px"] * 0.1)
    table = report.network_table(with_mm, paper.TABLE2, ["unet"])
    assert table.loc[0, "hd95_mm_mean"] == pytest.approx(0.85)
    markdown, _ = report.to_markdown_and_latex(table, "Network", "caption")
    assert "HD95 mm (ours)" in markdown and "0.85 ± 0.07" in markdown
    plain, _ = report.to_markdown_and_latex(report.network_table(runs().assign(hd95_mm=float("nan")), paper.TABLE2, ["unet"]),
                                            "Network", "caption")
    assert "mm" not in plain
