"""What the study config asks of the workflow, per network: weight-decay candidates only where the
weight decay is auto, and each backbone kind's pretrained weights only in networks built on it."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

from sonoseg import catalog, models

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
    return set(re.findall(r"weight_decay/(\w+)/wd[^/]+/history\.csv", output))


def test_weight_decay_candidates_only_for_networks_that_use_auto(workflow_copy):
    config = {
        **BASE,
        "networks": ["unet", "light_unet", "lighter_unet_c1"],
        "train": {**BASE["train"], "weight_decay": "auto", "overrides": {"lighter_unet_c1": {"weight_decay": 0.001}}},
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert candidate_networks(output) == {"unet", "light_unet"}
    assert "weight_decay/lighter_unet_c1/selected.json" not in output

    # A fixed weight decay for the study, auto for one network: only that one is tuned.
    config["train"] = {**BASE["train"], "weight_decay": 0.0001, "overrides": {"unet": {"weight_decay": "auto"}}}
    config["seeds"] = [0, 1]
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert candidate_networks(output) == {"unet"}
    assert "tables/weight_decay.csv" in output
    # Seed 1 trains with the chosen decay; seed 0, the candidates' seed, is the chosen candidate itself.
    trained = re.findall(
        r"sonoseg train --network unet --seed (\d) .*--weight-decay-file \S*weight_decay/unet/selected", output
    )
    assert trained == ["1"]
    assert re.search(
        r"sonoseg adopt-weight-decay --selected \S*weight_decay/unet/selected\.json .*models/unet/seed0/", output
    )


def pretrained_args(output: str) -> dict[str, str]:
    """network -> the --pretrained-backbone path its training command gets ('' for none)."""
    found = {}
    for command in re.findall(r"sonoseg train --network .*", output):
        network = re.search(r"--network (\S+)", command)[1]
        flag = re.search(r"--pretrained-backbone (\S+)", command)
        found[network] = flag[1] if flag else ""
    return found


def test_each_backbone_kind_gets_its_own_weights_file(workflow_copy):
    config = {
        **BASE,
        "networks": ["unet", "fcn8s", "fcn16s", "deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet101"],
        "train": {
            **BASE["train"],
            "weight_decay": 0.0001,
            "pretrained_backbones": {"vgg16": "/weights/vgg16.pth", "mobilenet_v2": "/weights/mnv2.pth"},
            "overrides": {
                "fcn16s": {"pretrained_backbone": ""},
                "deeplabv3plus_resnet101": {"pretrained_backbone": "/weights/r101.pth"},
            },
        },
    }
    code, output = dry_run(workflow_copy, config)
    assert code == 0, output[-3000:]
    assert pretrained_args(output) == {
        "unet": "",
        "fcn8s": "/weights/vgg16.pth",
        "fcn16s": "",
        "deeplabv3plus_mobilenetv2": "/weights/mnv2.pth",
        "deeplabv3plus_resnet101": "/weights/r101.pth",
    }


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


def test_catalog_rules_without_snakemake():
    train = {
        "weight_decay": "auto",
        "pretrained_backbones": {"vgg16": "v.pth"},
        "overrides": {"fcn8s": {"weight_decay": 0.01}, "fcn16s": {"pretrained_backbone": "mine.pth"}},
    }
    assert catalog.weight_decay_is_auto(train, "unet") and not catalog.weight_decay_is_auto(train, "fcn8s")
    assert catalog.pretrained_backbone_for(train, "fcn32s") == "v.pth"
    assert catalog.pretrained_backbone_for(train, "fcn16s") == "mine.pth"
    assert catalog.pretrained_backbone_for(train, "deeplabv3plus_resnet101") == ""
    assert catalog.pretrained_backbone_for(train, "unet") == ""
    assert set(catalog.NETWORK_BACKBONES.values()) == set(catalog.BACKBONE_KINDS)
    assert set(catalog.NETWORK_BACKBONES) <= set(models.names())
    with pytest.raises(ValueError, match="no backbone"):
        catalog.pretrained_backbone_for({"overrides": {"unet": {"pretrained_backbone": "x"}}}, "unet")


def test_ingest_defaults_are_the_schemas():
    """`sonoseg ingest` leaves a setting the config does not give to data.ingest's default: one value,
    the schema's, for both."""
    import inspect

    from sonoseg import cli, data

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    dataset = schema["properties"]["dataset"]["properties"]
    parameters = inspect.signature(data.ingest).parameters
    assert set(cli.INGEST_SETTINGS) == set(dataset) - {"layout", "root"}
    for key, parameter in cli.INGEST_SETTINGS.items():
        schema_default = dataset[key]["default"]
        assert parameters[parameter].default == (schema_default or None if key == "csv" else schema_default), key


def test_split_is_stratified_only_when_asked(workflow_copy):
    code, output = dry_run(workflow_copy, BASE)
    assert code == 0, output[-3000:]
    assert "sonoseg split " in output and "--stratify" not in output
    code, output = dry_run(workflow_copy, {**BASE, "split": {"stratify": "meta_lesion_type"}})
    assert code == 0, output[-3000:]
    assert re.search(r"sonoseg split .*--stratify meta_lesion_type", output)
