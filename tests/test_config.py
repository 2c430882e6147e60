"""What the study config asks of the workflow, per network: selection candidates only where the
learning rate or weight decay is auto, and each backbone kind's pretrained weights only in networks
built on it."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, run_snakemake

from sonoseg.errors import SonosegError
from sonoseg.networks import catalog, models
from sonoseg.study import config_check, runsheet

BASE = {
    "study": "plan",
    "synthetic": {"patients": 6, "seed": 2, "height": 64, "width": 96},
    "preprocess": {"size": 32},
    "seeds": [0],
    "baselines": [],
    "ladder": {"enabled": False},
    "train": {"device": "cpu", "threads": 1, "weight_decay_grid": [0.0001, 0], "min_epochs": 1, "max_epochs": 1},
}


def dry_run(workdir: Path, config: dict) -> tuple[int, str]:
    path = workdir / "config" / "plan.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", "config/plan.yaml"], workdir)
    return result.returncode, result.stdout + result.stderr


def candidate_networks(output: str) -> set[str]:
    return set(re.findall(r"runs/(\w+)--wd[^/]+/fold\d+/seed\d+/history\.csv", output))


def test_weight_decay_candidates_only_for_networks_that_use_auto(workflow_copy):
    config = {
        **BASE,
        "networks": ["unet", "light_unet", "lighter_unet_c1"],
        "train": {**BASE["train"], "weight_decay": "auto", "overrides": {"lighter_unet_c1": {"weight_decay": 0.001}}},
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert candidate_networks(output) == {"unet", "light_unet"}
    assert "selection/lighter_unet_c1/" not in output

    # A fixed weight decay for the study, auto for one network: only that one is tuned.
    config["train"] = {**BASE["train"], "weight_decay": 0.0001, "overrides": {"unet": {"weight_decay": "auto"}}}
    config["seeds"] = [0, 1]
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert candidate_networks(output) == {"unet"}
    assert "tables/selection.csv" in output
    # Both seeds train from the recipe that the selection wrote; seed 0, the candidates' seed, is offered
    # the candidates, and training adopts the one that is this very run (tests/test_workflow.py).
    assert re.search(
        r"sonoseg recipe .*--selection \S*selection/unet/fold0\.json --out \S*runs/unet/fold0/recipe",
        output,
    )
    trained = re.findall(r"sonoseg train --network unet --seed (\d) --recipe \S*runs/unet/fold0/recipe\.json.*", output)
    assert sorted(trained) == ["0", "1"]
    offered = re.findall(r"sonoseg train --network unet --seed (\d) .*--reuse-models (\S+) (\S+) ", output)
    assert [seed for seed, *_ in offered] == ["0"]
    assert all("runs/unet--wd" in path for path in offered[0][1:])


def pretrained_args(output: str) -> dict[str, str]:
    """network -> the --pretrained-backbone path its training command gets ('' for none)."""
    found = {}
    for command in re.findall(r"sonoseg train --network .*", output):
        network = re.search(r"--network (\S+)", command)[1]
        flag = re.search(r"--pretrained-backbone (\S+)", command)
        found[network] = flag[1] if flag else ""
    return found


def test_each_backbone_kind_gets_its_own_weights_file(workflow_copy):
    # The weights files must exist: the workflow fingerprints each one at start (sonoseg.data.provenance).
    weights = workflow_copy / "weights"
    weights.mkdir()
    for name in ("vgg16", "mnv2", "r101"):
        (weights / f"{name}.pth").write_bytes(name.encode())
    config = {
        **BASE,
        "networks": ["unet", "fcn8s", "fcn16s", "deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet101"],
        "train": {
            **BASE["train"],
            "weight_decay": 0.0001,
            "pretrained_backbones": {"vgg16": f"{weights}/vgg16.pth", "mobilenet_v2": f"{weights}/mnv2.pth"},
            "overrides": {
                "fcn16s": {"pretrained_backbone": ""},
                "deeplabv3plus_resnet101": {"pretrained_backbone": f"{weights}/r101.pth"},
            },
        },
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert pretrained_args(output) == {
        "unet": "",
        "fcn8s": f"{weights}/vgg16.pth",
        "fcn16s": "",
        "deeplabv3plus_mobilenetv2": f"{weights}/mnv2.pth",
        "deeplabv3plus_resnet101": f"{weights}/r101.pth",
    }


def test_weights_of_another_backbone_kind_are_refused_at_planning(workflow_copy):
    """ResNet weights given for VGG16 passed the dry run and were refused when fcn8s's training started, after every
    job before it had run. The planning reads the file's tensor names (without torch) and names the mismatch."""
    import torch

    from sonoseg.networks import weights_file

    weights = workflow_copy / "weights"
    weights.mkdir()
    resnet = {f"layer{i}.{j}.conv3.weight": torch.zeros(1) for i in (3, 4) for j in (2, 22) if (i, j) != (4, 22)}
    torch.save({"state_dict": resnet}, weights / "resnet101.pth")
    torch.save({"features.28.weight": torch.zeros(1)}, weights / "vgg16.pth")
    assert weights_file.guess_kind(weights_file.names_in_file(weights / "resnet101.pth")) == "resnet101"
    assert weights_file.names_in_file(weights / "missing.pth") is None
    config = {**BASE, "networks": ["fcn8s"], "train": {**BASE["train"], "weight_decay": 0.0001}}
    config["train"]["pretrained_backbones"] = {"vgg16": f"{weights}/resnet101.pth"}
    code, output = dry_run(workflow_copy, config)
    assert code != 0 and f"{weights}/resnet101.pth: holds resnet101 weights, but fcn8s's backbone is vgg16" in output
    config["train"]["pretrained_backbones"] = {"vgg16": f"{weights}/vgg16.pth"}
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]


def test_old_single_pretrained_key_and_misplaced_overrides_are_clear_errors(workflow_copy):
    old = {**BASE, "networks": ["fcn8s"], "train": {**BASE["train"], "pretrained_backbone": "/weights/vgg16.pth"}}
    code, output = dry_run(workflow_copy, old)
    assert code != 0 and "replaced by train.pretrained_backbones" in output
    unknown_kind = {**BASE, "networks": ["fcn8s"], "train": {**BASE["train"], "pretrained_backbones": {"vgg19": "x"}}}
    code, output = dry_run(workflow_copy, unknown_kind)
    assert code != 0 and "vgg19" in output
    no_backbone = {
        **BASE,
        "networks": ["unet"],
        "train": {**BASE["train"], "overrides": {"unet": {"pretrained_backbone": "/weights/vgg16.pth"}}},
    }
    code, output = dry_run(workflow_copy, no_backbone)
    assert code != 0 and "unet has no backbone" in output


def test_learning_rate_auto_trains_one_candidate_per_grid_point_and_chooses_on_validation(workflow_copy):
    """learning_rate auto with weight_decay auto: every pair of the two grids is a candidate, in each
    fold; the network's recipe takes the selection's choice; the candidates never read a test cache."""
    config = {
        **BASE,
        "networks": ["unet", "lighter_unet_c1"],
        "split": {"folds": 2},
        "train": {
            **BASE["train"],
            "weight_decay": 0.0001,
            "learning_rate_grid": [0.001, 0.003],
            "overrides": {"unet": {"learning_rate": "auto", "weight_decay": "auto"}},
        },
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    candidates = set(re.findall(r"runs/(unet--[^/]+)/fold(\d)/seed0/history\.csv", output))
    expected = {f"unet--lr{lr}-wd{wd}" for lr in ("0.001", "0.003") for wd in ("0.0001", "0")}
    assert candidates == {(name, fold) for name in expected for fold in "01"}
    assert not re.search(r"lighter_unet_c1--(lr|wd)", output)  # its settings are fixed: no candidate
    for fold in "01":
        assert re.search(rf"sonoseg recipe .*--selection \S*selection/unet/fold{fold}\.json", output)
        assert re.search(
            r"sonoseg select-recipe --network unet --points .*learning_rate=0\.003,weight_decay=0\b", output
        )
    for command in re.findall(r"sonoseg train --network unet .*", output):
        assert "test.npz" not in command  # candidates and networks train on train and validation caches only


def test_a_selection_chooses_the_lowest_validation_loss_among_learning_rates_and_decays(tmp_path):
    from sonoseg.training import recipe, selection

    candidates = []
    for number, (lr, wd, loss) in enumerate([(0.001, 0.0, 0.30), (0.003, 0.0, 0.20), (0.003, 1e-4, 0.20)]):
        path = tmp_path / f"h{number}.csv"
        pd.DataFrame({"epoch": [1, 2], "val_loss": [0.9, loss], "val_dice": [0.1, 0.5]}).to_csv(path, index=False)
        candidates.append(({"learning_rate": lr, "weight_decay": wd}, path))
    chosen, table = selection.select(candidates)
    assert chosen == {"learning_rate": 0.003, "weight_decay": 1e-4}  # a tie goes to the larger weight decay
    out = tmp_path / "selection" / "unet" / "fold1.json"
    selection.write_selection("unet", candidates, out)
    resolved = recipe.resolve(recipe.Recipe(learning_rate=0.1, weight_decay=0.5), out)
    assert (resolved.learning_rate, resolved.weight_decay) == (0.003, 1e-4)
    choices = selection.choices_table([out])
    assert choices["chosen"].tolist() == [True, False, False] and (choices["fold"] == "1").all()
    # A selection file from before the learning rate could be chosen still reads.
    old = tmp_path / "old.json"
    old.write_text('{"network": "unet", "weight_decay": 0.001, "criterion": "x", "candidates": []}')
    assert selection.read_selection(old)["chosen"] == {"weight_decay": 0.001}
    with pytest.raises(SonosegError, match="not a recipe selection"):
        selection.read_selection(tmp_path / "missing.json")


def test_the_old_weight_decay_seed_key_is_a_clear_error(workflow_copy):
    config = {**BASE, "networks": ["unet"], "train": {**BASE["train"], "weight_decay_seed": 1}}
    code, output = dry_run(workflow_copy, config)
    assert code != 0 and "replaced by train.selection_seed" in output


def test_catalog_rules_without_snakemake():
    train = {
        "weight_decay": "auto",
        "pretrained_backbones": {"vgg16": "v.pth"},
        "overrides": {"fcn8s": {"weight_decay": 0.01}, "fcn16s": {"pretrained_backbone": "mine.pth"}},
    }
    assert catalog.auto_settings(train, "unet") == ("weight_decay",) and catalog.auto_settings(train, "fcn8s") == ()
    both = {**train, "learning_rate": "auto", "overrides": {"fcn8s": {"learning_rate": 0.01}}}
    assert catalog.auto_settings(both, "unet") == ("learning_rate", "weight_decay")
    assert catalog.auto_settings(both, "fcn8s") == ("weight_decay",)
    assert catalog.pretrained_backbone_for(train, "fcn32s") == "v.pth"
    assert catalog.pretrained_backbone_for(train, "fcn16s") == "mine.pth"
    assert catalog.pretrained_backbone_for(train, "deeplabv3plus_resnet101") == ""
    assert catalog.pretrained_backbone_for(train, "unet") == ""
    kinds = {name: catalog.backbone_kind(name) for name in models.names()}
    assert {kind for kind in kinds.values() if kind} == set(catalog.BACKBONE_KINDS)
    with pytest.raises(SonosegError, match="no backbone"):
        catalog.pretrained_backbone_for({"overrides": {"unet": {"pretrained_backbone": "x"}}}, "unet")


def test_ingest_defaults_are_the_schemas():
    """`sonoseg ingest` leaves a setting the config does not give to data.ingest's default: one value,
    the schema's, for both."""
    import inspect

    from sonoseg import data
    from sonoseg.study import commands

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    dataset = schema["properties"]["dataset"]["properties"]
    parameters = inspect.signature(data.ingest).parameters
    assert set(commands.INGEST_SETTINGS) == set(dataset) - {"layout", "root"}
    for key, parameter in commands.INGEST_SETTINGS.items():
        schema_default = dataset[key]["default"]
        assert parameters[parameter].default == (schema_default or None if key == "csv" else schema_default), key


def test_split_is_stratified_only_when_asked(workflow_copy):
    code, output = dry_run(workflow_copy, BASE)
    assert code == 0, output[-3000:]
    assert "sonoseg split " in output and "--stratify" not in output
    code, output = dry_run(workflow_copy, {**BASE, "split": {"stratify": "meta_lesion_type"}})
    assert code == 0, output[-3000:]
    assert re.search(r"sonoseg split .*--stratify meta_lesion_type", output)


def test_schema_lists_the_catalogs_networks():
    """One source of truth: the schema's network names are the catalog's built-in networks."""
    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["networks"]["items"]["enum"] == list(catalog.BUILT_IN_NETWORKS)
    untrained = schema["properties"]["baselines"]["items"]["enum"]
    assert untrained == catalog.untrained()
    assert set(catalog.floors()) | set(catalog.references()) == set(untrained)


def test_run_sheet_has_one_row_per_run(workflow_copy):
    """`sonoseg runs` prints the sheet the workflow writes: every kind is a row, names parse back."""
    import subprocess
    import sys
    from io import StringIO

    import pandas as pd

    config = {
        **BASE,
        "networks": ["unet", "lighter_unet_c1"],
        "seeds": [0, 1],
        "baselines": ["threshold_baseline"],
        "ladder": {"enabled": True, "network": "lighter_unet_c1", "seeds": [0],
                   "steps": [{"name": "baseline", "changes": {"augment": False}}, {"name": "adam", "changes": {}}]},
        "train": {**BASE["train"], "weight_decay": 0.0001,
                  "overrides": {"unet": {"weight_decay": "auto"},
                                "lighter_unet_c1": {"precision": "fp32", "loss": "bce_dice"}}},
        "external_datasets": [],  # (tests/test_generalization.py: the external runs' rows)
    }  # fmt: skip
    (workflow_copy / "config" / "plan.yaml").write_text(yaml.safe_dump(config))
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "sonoseg"), "runs", "--configfile", "config/plan.yaml"],
        cwd=workflow_copy,
        capture_output=True,
        text=True,
    )
    assert printed.returncode == 0, printed.stderr
    sheet = pd.read_csv(StringIO(printed.stdout), sep="\t", dtype=str, keep_default_na=False)
    names = ["unet", "lighter_unet_c1", "unet--wd0.0001", "unet--wd0", "ladder--baseline", "ladder--adam"]
    # Both networks have two seeds: each is also tested as the ensemble of its seeds (no training).
    ensembles = ["unet--ensemble", "lighter_unet_c1--ensemble"]
    assert list(sheet["name"]) == [*names, "threshold_baseline", *ensembles]
    kinds = ["network"] * 2 + ["candidate"] * 2 + ["ladder_step"] * 2 + ["baseline"] + ["ensemble"] * 2
    assert list(sheet["kind"]) == kinds
    # A floor is one run per fold whatever the seeds (fitted deterministically): its first seed names it.
    assert list(sheet["seeds"]) == ["0 1", "0 1", "0", "0", "0", "0", "0", "0", "0"]
    assert list(sheet["members"][-2:]) == ["0 1", "0 1"] and list(sheet["model_from"][-2:]) == [
        "unet",
        "lighter_unet_c1",
    ]
    assert list(sheet["selected_from"]) == ["unet", "", "", "", "", "", "", "", ""]
    assert list(sheet["point"][2:4]) == ["weight_decay=0.0001", "weight_decay=0"]
    assert sheet.loc[sheet["name"] == "threshold_baseline", "recipe"].item() == ""
    # A network's overrides are its changes to the study's recipe (a chosen weight decay is not one).
    assert list(sheet["recipe_changes"][:2]) == ["", "loss bce_dice; precision fp32"]
    # The same sheet as the workflow builds it in common.smk, from the validated config.
    loaded = runsheet.build({**config, "train": {**config["train"]}} | _schema_defaults(workflow_copy, config))
    assert [run.name for run in loaded] == list(sheet["name"])


def _schema_defaults(workflow_copy, config):
    from snakemake.utils import update_config, validate

    merged = yaml.safe_load((workflow_copy / "config" / "config.yaml").read_text())
    update_config(merged, config)
    validate(merged, str(workflow_copy / "workflow" / "schemas" / "config.schema.yaml"))
    return merged


def test_a_run_name_that_would_be_ambiguous_is_refused():
    with pytest.raises(SonosegError, match="must not contain"):
        runsheet.check_config(
            {
                "networks": ["unet"],
                "baselines": [],
                "seeds": [0],
                "train": {"overrides": {}},
                "ladder": {"seeds": [], "steps": [{"name": "wd--1", "changes": {}}]},
            }
        )
    with pytest.raises(SonosegError, match="unknown network 'unet2'; known networks: unet, light_unet"):
        runsheet.check_config(
            {
                "networks": ["unet2"],
                "baselines": [],
                "seeds": [0],
                "train": {"overrides": {}},
                "ladder": {"seeds": [], "steps": []},
            }
        )


def test_predict_scales_reach_every_prediction_with_a_model_and_nothing_when_off(workflow_copy):
    """predict.scales: --scales on every predict job with models and on the post-processing choice, none
    on a floor's; left at [1.0], no job's command carries it (a study without it is not redone);
    predict.shrink_above rides with it, and out of (0, 1] is refused; predict.shrink_found_above rides
    with that, and is refused without it or below 1."""
    config = {
        **BASE,
        "networks": ["lighter_unet_c1"],
        "baselines": ["threshold_baseline"],
        "train": {**BASE["train"], "weight_decay": 0.0001},
    }
    code, off = dry_run(workflow_copy, config)
    assert code == 0, off[-3000:]
    assert "--scales" not in off
    code, on = dry_run(workflow_copy, {**config, "predict": {"scales": [1.0, 0.75]}})
    assert code == 0, on[-3000:]
    shell = [line.split("Shell command:")[-1].strip() for line in on.splitlines()]
    commands = [line for line in shell if line.startswith(("sonoseg predict", "sonoseg choose-postprocess"))]
    with_model = [c for c in commands if "--model" in c]
    assert with_model and all("--scales 1.0 0.75" in c for c in with_model)
    assert any(c.startswith("sonoseg choose-postprocess") for c in with_model)
    assert all("--scales" not in c for c in commands if "--baseline" in c)
    assert all("--shrink-above" not in c for c in commands)
    # The size-aware rule rides with the scales, on the same jobs.
    code, aware = dry_run(workflow_copy, {**config, "predict": {"scales": [1.0, 0.75], "shrink_above": 0.9}})
    assert code == 0, aware[-3000:]
    shell = [line.split("Shell command:")[-1].strip() for line in aware.splitlines()]
    aware_commands = [
        c for c in shell if c.startswith(("sonoseg predict", "sonoseg choose-postprocess")) and "--model" in c
    ]
    assert len(aware_commands) == len(with_model)
    assert all("--scales 1.0 0.75 --shrink-above 0.9" in c for c in aware_commands)
    code, refused = dry_run(workflow_copy, {**config, "predict": {"scales": [1.0, 1.0]}})
    assert code != 0 and "scales" in refused
    code, refused = dry_run(workflow_copy, {**config, "predict": {"scales": [1.0, 0.75], "shrink_above": 1.5}})
    assert code != 0 and "shrink_above" in refused
    # Its second trigger rides with it; alone, or below 1, it is refused.
    found = {"scales": [1.0, 0.75], "shrink_above": 1.0, "shrink_found_above": 1.3}
    code, both = dry_run(workflow_copy, {**config, "predict": found})
    assert code == 0, both[-3000:]
    shell = [line.split("Shell command:")[-1].strip() for line in both.splitlines()]
    assert all(
        "--scales 1.0 0.75 --shrink-above 1.0 --shrink-found-above 1.3" in c
        for c in shell
        if c.startswith(("sonoseg predict", "sonoseg choose-postprocess")) and "--model" in c
    )
    code, refused = dry_run(workflow_copy, {**config, "predict": {**found, "shrink_above": None}})
    assert code != 0 and "predict.shrink_found_above" in refused
    code, refused = dry_run(workflow_copy, {**config, "predict": {**found, "shrink_found_above": 0.9}})
    assert code != 0 and "shrink_found_above" in refused


@pytest.mark.parametrize(
    ("predict", "says", "not_says"),
    [
        ({"postprocess": "validation", "scales": [1.0]}, "chose on its fold's validation part", "input scales"),
        ({"postprocess": "none", "scales": [1.0]}, "not at all (every pixel kept)", "one lesion kept"),
        (
            {"postprocess": "keep_one", "scales": [1.0, 0.75]},
            "predicted at input scales [1.0, 0.75]",
            "validation part",
        ),
        ({"postprocess": "keep_one", "scales": [0.75]}, "predicted at input scales [0.75]", "quantile"),
        (
            {"postprocess": "keep_one", "scales": [1.0, 0.75], "shrink_above": 1.0, "shrink_found_above": 1.3},
            "exceeds the 1.0 quantile of the training lesions', or 1.3 × it at a smaller scale)",
            "validation part",
        ),
    ],
)
def test_the_reports_front_page_says_the_post_processing_the_study_used(predict, says, not_says):
    """workflow/report/workflow.rst, as Snakemake's report renders it (Jinja over the validated config)."""
    import jinja2

    config = yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text())
    config["predict"].update({"component_rule": "area", "shrink_above": None, "shrink_found_above": None, **predict})
    config["report_provenance"] = ""
    template = jinja2.Template((Path(__file__).parents[1] / "workflow/report/workflow.rst").read_text())
    # categories: the report's entries, which Snakemake passes the template too (none here)
    text = " ".join(template.render(snakemake=type("S", (), {"config": config}), categories={}).split())
    assert says in text and not_says not in text


def test_overrides_of_networks_the_study_does_not_run_are_noted_and_a_misspelt_one_is_refused(workflow_copy):
    """A smaller study layered over config/quick.yaml narrows the networks but cannot take quick.yaml's
    overrides out: those are not used, and the start says so; a name no network has stops it."""
    config = {
        **BASE,
        "networks": ["lighter_unet_c1"],
        "train": {**BASE["train"], "overrides": {"unet": {"learning_rate": 0.01}}},
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert "Note: config train.overrides sets unet, which this study does not train" in output
    assert "train.overrides: {unet: null} clears one network's, train.overrides: null all" in output  # how to
    assert "sonoseg train --network unet" not in output
    config["train"]["overrides"] = {"unett": {"learning_rate": 0.01}}
    code, output = dry_run(workflow_copy, config)
    assert code != 0
    assert "config train.overrides: unknown network 'unett'; known networks: unet, light_unet" in output


@pytest.mark.parametrize(
    "over, cleared",
    [({"overrides": {}}, False), ({"overrides": None}, True), ({"overrides": {"unet": None}}, True)],
    ids=["empty map merges", "null clears all", "null clears one"],
)
def test_null_clears_overrides_an_earlier_config_file_set(workflow_copy, over, cleared):
    # Config files merge key by key: {} over a file's overrides keeps them; null takes them out.
    first = {
        **BASE,
        "networks": ["lighter_unet_c1"],
        "train": {**BASE["train"], "overrides": {"unet": {"augment": False}}},
    }
    (workflow_copy / "config" / "first.yaml").write_text(yaml.safe_dump(first))
    (workflow_copy / "config" / "second.yaml").write_text(yaml.safe_dump({"train": over}))
    files = ["--configfile", "config/first.yaml", "config/second.yaml"]
    result = run_snakemake(["all", "-n", "--cores", "1", *files], workflow_copy)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert ("config train.overrides sets unet" in output) is not cleared
    assert config_check.clear_nulls({"train": {"overrides": None}}) == {"train": {"overrides": {}}}


def test_ingest_refuses_an_option_it_does_not_know(tmp_path):
    """A misspelt ingest setting would otherwise run as the default unseen (on_bad_samples: exclude ran as fail)."""
    import json
    import subprocess

    options = json.dumps({"root": str(tmp_path), "layout": "folder", "on_bad_samples": "exclude"})
    result = subprocess.run(
        [str(BIN / "sonoseg"), "ingest", "--options", options, "--out", str(tmp_path / "m.csv")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "ingest --options: unknown setting(s) on_bad_samples; known: root, layout, on_bad_sample" in result.stderr


def test_every_config_problem_is_one_line_naming_its_key_before_anything_runs(workflow_copy):
    """A misspelt key, a number YAML reads as text (1e-3: no dot) in a network's overrides, a ladder change
    out of range, an unknown ladder network, split fractions that do not sum to 1: each stops the dry run
    with a line naming the key, not a training job later nor the schema quoted whole."""
    config = {
        **BASE,
        "networks": ["lighter_unet_c1"],
        "splt": {"seed": 1},
        "train": {**BASE["train"], "overrides": {"lighter_unet_c1": {"learning_rate": "1e-3", "momentum": -3}}},
        "ladder": {"enabled": True, "network": "unet", "steps": [{"name": "a", "changes": {"learning_rate": -5}}]},
    }
    code, output = dry_run(workflow_copy, config)
    assert code != 0
    assert "4 problem(s) in the config" in output
    for line in (
        "config (top level): Additional properties are not allowed ('splt' was unexpected)",
        "config train.overrides.lighter_unet_c1.learning_rate: '1e-3' is not accepted",
        "(YAML reads 1e-3 as text, without a dot: write it as 0.001)",
        "config train.overrides.lighter_unet_c1.momentum: -3 is less than the minimum of 0",
        "config ladder.steps.0.changes.learning_rate: -5 is not accepted",
    ):
        assert line in output, output[-3000:]
    assert len(output.splitlines()) < 60, output[-3000:]  # not the schema and config quoted back
    config = {**BASE, "networks": ["lighter_unet_c1"], "ladder": {"enabled": True, "network": "unett"}}
    code, output = dry_run(workflow_copy, config)
    assert code != 0 and "config ladder.network: unknown network 'unett'; known networks: unet" in output
    config = {**BASE, "networks": ["lighter_unet_c1"], "split": {"fractions": [0.6, 0.5, 0.4]}}
    code, output = dry_run(workflow_copy, config)
    assert code != 0 and "config split.fractions: [0.6, 0.5, 0.4] must sum to 1" in output


def test_nested_values_given_on_the_command_line_are_read_as_a_config_file_reads_them(workflow_copy):
    """Snakemake keeps a nested --config value's scalars as text ('train={"threads": 2}' gave threads '2',
    refused as not an integer): they are read as YAML reads a config file, overrides and ladder changes too;
    text that YAML keeps as text is still named."""
    schema = config_check.load_schema(workflow_copy / "workflow" / "schemas" / "config.schema.yaml")
    config = {
        "seeds": ["0", "1"],
        "train": {"threads": "2", "overrides": {"unet": {"learning_rate": "0.002", "augment": "false"}}},
        "predict": {"tta": "true"},
        "ladder": {"steps": [{"name": "a", "changes": {"batch_size": "8"}}]},
        "study": "123",  # a name: text in the schema, so kept as text
    }
    changed = config_check.retype_command_line_text(config, schema)
    assert config == {
        "seeds": [0, 1],
        "train": {"threads": 2, "overrides": {"unet": {"learning_rate": 0.002, "augment": False}}},
        "predict": {"tta": True},
        "ladder": {"steps": [{"name": "a", "changes": {"batch_size": 8}}]},
        "study": "123",
    }
    assert sorted(changed) == sorted(
        [
            "seeds.0",
            "seeds.1",
            "train.threads",
            "train.overrides.unet.learning_rate",
            "train.overrides.unet.augment",
            "predict.tta",
            "ladder.steps.0.changes.batch_size",
        ]
    )
    (workflow_copy / "config" / "plan.yaml").write_text(yaml.safe_dump({**BASE, "networks": ["lighter_unet_c1"]}))
    given = ["--config", 'train={"threads": 1, "max_epochs": 2}', 'predict={"tta": false}']
    result = run_snakemake(["all", "-n", "--cores", "1", "--configfile", "config/plan.yaml", *given], workflow_copy)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # A number of the wanted type but out of range is named for its range, as a config file's is (not its type).
    config = {"preprocess": {"size": "48"}, "train": {"max_epochs": "0", "ultrasound_augment": "true"}}
    config_check.retype_command_line_text(config, schema)  # an enum of booleans and text: true, as text 'true'
    assert config == {"preprocess": {"size": 48}, "train": {"max_epochs": 0, "ultrasound_augment": True}}
    problems = config_check.problems(config, schema)
    assert "config preprocess.size: 48 is not a multiple of 32" in problems
    assert "config train.max_epochs: 0 is less than the minimum of 1" in problems
    given = ["--config", 'train={"threads": "two"}']
    result = run_snakemake(["all", "-n", "--cores", "1", "--configfile", "config/plan.yaml", *given], workflow_copy)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config train.threads: 'two' is not of type 'integer'" in output


def test_the_ladders_network_overrides_are_used_even_outside_the_studys_networks():
    """The ladder's steps start from its network's recipe, overrides included: not noted as unused."""
    config = {
        "networks": ["unet"],
        "train": {"overrides": {"malunet": {"precision": "fp32"}, "unext": {"learning_rate": 0.01}}},
        "ladder": {"enabled": True, "network": "malunet"},
    }
    assert runsheet.unused_overrides_note(config).startswith("config train.overrides sets unext, which")
    config["ladder"]["enabled"] = False
    assert "sets malunet, unext, which" in runsheet.unused_overrides_note(config)


def test_the_yaml_hint_gives_a_number_yaml_reads_as_one():
    from sonoseg.study import config_check

    for text, number in (("1e-3", 0.001), ("1e3", 1000), ("2E+2", 200), ("5e-1", 0.5)):
        hint = config_check._as_number(text)
        assert yaml.safe_load(f"x: {hint}")["x"] == number


def test_settings_no_run_reads_leave_the_run_sheets_rule_as_it_was(workflow_copy):
    """How often a checkpoint is written and how many jobs share a GPU change how jobs run, not what they
    make (the schema says so): the run sheet's rule is made from the config without them, and the sheet
    itself is the same either way."""
    config = {**BASE, "networks": ["unet"], "external_datasets": []}
    merged = _schema_defaults(workflow_copy, config)
    other = {**merged, "train": {**merged["train"], "checkpoint_seconds": 5, "runs_per_gpu": 3, "threads": 7}}
    assert runsheet.sheet_config(other) == runsheet.sheet_config(merged)
    assert runsheet.to_tsv(runsheet.build(other)) == runsheet.to_tsv(runsheet.build(runsheet.sheet_config(other)))
    # Nor do the subgroup table's columns, which only that table reads.
    regrouped = {**merged, "subgroups": {"columns": ["class", "view"]}}
    assert runsheet.sheet_config(regrouped) == runsheet.sheet_config(merged) and "subgroups" in merged
    # A setting the runs read still changes it.
    decay = {**merged, "train": {**merged["train"], "weight_decay": 0.01}}
    assert runsheet.sheet_config(decay) != runsheet.sheet_config(merged)


def test_a_changed_config_reruns_the_run_sheet_said_in_a_short_path(workflow_copy):
    """The run sheet's rule takes its config as a file named by the config's digest: a changed config reruns
    the sheet, and Snakemake says so with two short paths, not the whole config twice (as it did with the
    config itself a parameter); going back to a config seen before reruns nothing."""
    import json

    config = {**BASE, "networks": ["unet"], "external_datasets": []}
    (workflow_copy / "config" / "plan.yaml").write_text(yaml.safe_dump(config))
    target = ["results/plan/runs.tsv", "--cores", "1", "--configfile", "config/plan.yaml"]
    made = run_snakemake(target, workflow_copy)
    assert made.returncode == 0, made.stderr[-3000:]
    written = list((workflow_copy / "results/plan/config").glob("run_sheet_*.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text()) == runsheet.sheet_config(_schema_defaults(workflow_copy, config))
    (workflow_copy / "config" / "other.yaml").write_text(yaml.safe_dump({"seeds": [0, 1]}))
    changed = run_snakemake([*target, "config/other.yaml", "-n"], workflow_copy)
    output = changed.stdout + changed.stderr
    assert changed.returncode == 0 and "Params have changed" in output, output[-3000:]
    assert '"ablation"' not in output and re.search(r"now: 'results/plan/config/run_sheet_\w+\.json'", output)
    again = run_snakemake([*target, "-n"], workflow_copy)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_a_study_of_the_users_own_networks_alone_plans_and_no_network_at_all_is_refused(workflow_copy):
    """`networks: []` with custom_networks: the study trains the user's networks only (docs/extending.md);
    with neither, the start says there is nothing to train."""
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "my_networks.py", workflow_copy / "my_networks.py")
    mine = {"tiny_unet": {"builder": "my_networks:tiny_unet", "label": "Tiny U-net (mine)"}}
    code, output = dry_run(workflow_copy, {**BASE, "networks": [], "custom_networks": mine})
    assert code == 0, output[-3000:]
    assert "--network tiny_unet" in output and "--network unet " not in output
    code, output = dry_run(workflow_copy, {**BASE, "networks": []})
    assert code != 0 and "config networks: empty, and no custom_networks" in output, output[-3000:]


def test_the_commands_that_read_no_data_are_told_from_the_command_line_as_argparse_takes_them():
    for argv in (["--unlock"], ["all", "--unl"], ["--cleanup-metadata", "a"], ["--cm=a"], ["--cleanup-m", "a"]):
        assert config_check.reads_no_data(argv), argv
    for argv in (["all", "-n"], ["--cores", "2"], ["--", "--unlock"], ["-u"], ["--until", "x"]):
        assert not config_check.reads_no_data(argv), argv


def test_a_command_that_only_makes_the_report_is_told_apart():
    for argv in (["--report", "r.html"], ["--report=r.html", "--cores", "1"]):
        assert config_check.only_reports(argv), argv
    for argv in (["all"], ["--report", "r.html", "--report-after-run"], ["--", "--report"], ["--report-stylesheet=s"]):
        assert not config_check.only_reports(argv), argv


@pytest.mark.parametrize(
    "split, dataset, external, says",
    [
        ({"folds": 1, "stratify": ""}, {"layout": "synthetic", "root": ""}, [], "a patient-level split (fractions"),
        (
            {"folds": 2, "stratify": "class"},
            {"layout": "busi", "root": "data/BUSI"},
            [{"name": "udiat", "role": "held_out"}, {"name": "sim", "role": "development"}],
            "a patient-level 2-fold cross-validation (each patient group tested in one fold;",
        ),
    ],
)
def test_the_reports_front_page_says_the_split_the_data_and_the_external_sets(split, dataset, external, says):
    """The front page names the split the study made (K folds or one split), the dataset's folder, how the
    split was stratified and the external sets, as the config says them."""
    import jinja2

    config = yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text())
    config["split"].update({"folds": 1, "stratify": "", **split})
    config["dataset"].update(dataset)
    config["external_datasets"] = external
    config["report_provenance"] = ""
    template = jinja2.Template((Path(__file__).parents[1] / "workflow/report/workflow.rst").read_text())
    text = " ".join(template.render(snakemake=type("S", (), {"config": config}), categories={}).split())
    assert says in text
    # Snakemake renders it with trim_blocks (a block tag eats its newline): "dataset(split seed" read so.
    trimmed = jinja2.Environment(trim_blocks=True).from_string(
        (Path(__file__).parents[1] / "workflow/report/workflow.rst").read_text()
    )
    rendered = " ".join(trimmed.render(snakemake=type("S", (), {"config": config}), categories={}).split())
    assert " (split seed" in rendered and "dataset(split" not in rendered and "``(split" not in rendered
    if dataset["layout"] == "busi":
        assert "of the ``busi`` dataset at ``data/BUSI`` (split seed" in text and "stratified by ``class``" in text
        assert "tested on ``udiat`` (held_out) and ``sim`` (development), datasets it never trains on" in text
        assert "fractions [" not in text.split("cross-validation")[0]
    else:
        assert "cross-validation" not in text and "tested on" not in text and " at ``" not in text


def test_an_empty_or_listed_config_file_is_refused_by_name(tmp_path, monkeypatch, capsys):
    """`sonoseg runs --configfile empty.yaml` printed the paper study's run sheet (an empty file read as no
    change), and `sonoseg fingerprint` hashed the paper study's data; Snakemake refuses such a file."""
    from conftest import REPO

    from sonoseg.study.cli import main

    monkeypatch.chdir(REPO)
    for name, text, said in (("empty.yaml", "", "empty"), ("list.yaml", "- networks\n", "not a mapping of keys")):
        (tmp_path / name).write_text(text)
        assert main(["runs", "--configfile", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}: {said}: a config file holds top-level keys" in err, err


def test_a_study_run_from_another_folder_keeps_the_workflows_defaults(workflow_copy, tmp_path):
    """A probe ran `snakemake -s <checkout>/Snakefile --configfile mine.yaml` from another folder: config.yaml
    (resolved against the working folder) was skipped without a word, and with it the external sets: a run
    planned without them. The workflow's own config.yaml stands in, said once, and its relative roots are
    named where they are not found."""
    elsewhere = tmp_path / "another folder"
    elsewhere.mkdir()
    (elsewhere / "mine.yaml").write_text(yaml.safe_dump(BASE))
    result = run_snakemake(
        ["-s", str(workflow_copy / "Snakefile"), "all", "-n", "--configfile", "mine.yaml"], elsewhere
    )
    output = result.stdout + result.stderr
    assert f"no config/config.yaml in the working folder {elsewhere}: the defaults are {workflow_copy}" in output
    assert result.returncode != 0  # the built-in external sets lie under the checkout, not here: named
    assert "data/external/pymust_far not found (external_datasets 'pymust_far' root)" in output
    # With the sets given as the checkout's (an absolute root), the study plans from here.
    sets = yaml.safe_load((workflow_copy / "config" / "config.yaml").read_text())["external_datasets"]
    mine = {**BASE, "external_datasets": [{**entry, "root": str(workflow_copy / entry["root"])} for entry in sets]}
    (elsewhere / "mine.yaml").write_text(yaml.safe_dump(mine))
    result = run_snakemake(
        ["-s", str(workflow_copy / "Snakefile"), "all", "-n", "--configfile", "mine.yaml"], elsewhere
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "ingest_external" in result.stdout
