"""The shape of the code: who imports whom, how files are saved, how the tool behaves in a pipe,
and a user's own network through the whole workflow."""

import ast
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import BIN, REPO, TINY, jobs_of, run_snakemake, write_config

from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.serving import modelio

PACKAGE = REPO / "src" / "sonoseg"


def sonoseg_imports(module: Path) -> set[str]:
    """The sonoseg modules one source file imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sonoseg"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("sonoseg"))
    return {name for name in names if name.startswith("sonoseg")}


@pytest.mark.parametrize("module", sorted(p.stem for p in (PACKAGE / "serving").glob("*.py")))
def test_serving_modules_import_no_trainer(module):
    """Prediction, export and the cost table read a model file through modelio and take the device from
    device.py, as nnU-Net's predictor reads a model folder: nothing in the serving stage imports the
    training stage."""
    imported = sonoseg_imports(PACKAGE / "serving" / f"{module}.py")
    assert not {name for name in imported if name.startswith("sonoseg.training")}, imported


def test_infer_uses_only_exports_public_functions():
    """infer reaches export through its public functions only (no _private names)."""
    tree = ast.parse((PACKAGE / "serving" / "infer.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "export"
    }
    assert used and not {name for name in used if name.startswith("_")}, used


def test_cli_holds_no_stage_logic():
    """Every function of the command line (cli.py: the parser; commands.py: each command) parses
    arguments or hands them to a module: no pandas, numpy or torch work happens there (the modules own
    the logic)."""
    for name in ("cli.py", "commands.py"):
        source = (PACKAGE / "study" / name).read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") in ("pd", "np", "torch"):
                raise AssertionError(f"{name} line {node.lineno}: {node.value.id}.{node.attr}")
        assert "import pandas" not in source and "import numpy" not in source


def test_save_atomic_names_the_file_and_cause_and_leaves_no_partial_file(tmp_path):
    """A full disk during a save: one line naming the file and 'no space left', and no .tmp left behind.
    Checked on a real small filesystem (a 1 MiB tmpfs mounted for the test; root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        target = mount / "model.pt"
        with pytest.raises(SonosegError) as raised:
            modelio.save_atomic({"weights": torch.zeros(1_000_000)}, target)  # 4 MB into 1 MiB
        message = str(raised.value)
        assert str(target) in message and "no space left" in message and "\n" not in message
        assert list(mount.iterdir()) == []  # neither the file nor its .tmp
        # A save that fits still works, and replaces the old file whole.
        modelio.save_atomic({"weights": torch.ones(10)}, target)
        modelio.save_atomic({"weights": torch.full((10,), 2.0)}, target)
        assert torch.load(target, weights_only=True)["weights"].tolist() == [2.0] * 10
        assert sorted(p.name for p in mount.iterdir()) == ["model.pt"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_save_atomic_into_a_missing_or_read_only_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SonosegError, match=r"model.pt: could not be written: (File exists|Not a directory)"):
        modelio.save_atomic({"a": torch.zeros(2)}, blocker / "model.pt")  # a file where a folder must be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_closed_pipe_ends_the_command_quietly():
    """`sonoseg models | head -n 1`: the first line, exit 0, nothing on stderr."""
    result = subprocess.run(
        f"{BIN / 'sonoseg'} models | head -n 1", shell=True, capture_output=True, text=True, executable="/bin/bash"
    )
    assert result.returncode == 0
    assert result.stdout.startswith("unet ") and len(result.stdout.splitlines()) == 1
    assert result.stderr == ""
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{BIN / 'sonoseg'} models | head -n 1 > /dev/null"],
        capture_output=True,
        text=True,
    )
    assert piped.returncode == 0 and "BrokenPipe" not in piped.stderr


def test_a_file_that_cannot_be_written_is_named_in_the_commands_one_line(tmp_path, monkeypatch, capsys):
    """A full disk while report-data wrote its figure said "OSError: [Errno 28] No space left on device", no file."""
    from sonoseg.study import cli, commands

    def full_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "samples.png"))

    def full_disk_unnamed(args):
        raise OSError(28, "No space left on device")

    for failing, said in (
        (full_disk, f"error: {tmp_path / 'samples.png'}: No space left on device"),
        (full_disk_unnamed, "error: no space left on the device"),
    ):
        monkeypatch.setattr(commands, "cmd_models", failing)
        assert cli.main(["models"]) == 2
        assert said in capsys.readouterr().err


USERS_MISTAKES = """
import torch
from torch import nn

class Squeezed(nn.Conv2d):
    def forward(self, x):
        return super().forward(x)[:, 0]

class AsDict(nn.Conv2d):
    def forward(self, x):
        return {"out": super().forward(x)}

def needs_width(width):
    return nn.Conv2d(3, 1, 1)

def nothing():
    return None

def two_channels():
    return nn.Conv2d(3, 2, 3, padding=1)

def squeezed():
    return Squeezed(3, 1, 3, padding=1)

def quarter_with_sixteen_channels():  # a pixel shuffle forgotten: as many values as the mask
    return nn.Conv2d(3, 16, 4, stride=4)

def as_dict():
    return AsDict(3, 1, 3, padding=1)

def with_sigmoid():
    return nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Sigmoid())

def fine():
    return nn.Conv2d(3, 1, 3, padding=1)
"""


@pytest.mark.parametrize(
    "builder, message",
    [
        ("needs_width", r"'users_mistakes:needs_width' failed: TypeError: .*no arguments"),
        ("nothing", r"'users_mistakes:nothing' returned a NoneType, not a torch.nn.Module"),
        ("two_channels", r"'mine' \(users_mistakes:two_channels\) maps .* to \(2, 2, 32, 32\)"),
        ("squeezed", r"to \(2, 32, 32\): sonoseg needs \(2, 1, 32, 32\)"),
        ("quarter_with_sixteen_channels", r"to \(2, 16, 8, 8\)"),
        ("as_dict", r"returns a dict, not one tensor of logits.*'out'"),
    ],
)
def test_a_users_network_is_checked_before_it_trains(builder, message, tmp_path, monkeypatch):
    """A user's network must take RGB images and return one channel of logits at the input's size: the
    loss flattens what it gets, so a squeezed map or 16 channels at a quarter of the size would train,
    unseen, on scrambled pixels. Each mistake is an error naming the network and its builder."""
    from sonoseg.networks import catalog, models

    (tmp_path / "users_mistakes.py").write_text(USERS_MISTAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "users_mistakes", raising=False)
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    catalog.register("mine", builder=f"users_mistakes:{builder}")
    with pytest.raises(SonosegError, match=message):
        models.check_output("mine", models.build("mine"), 32)


def test_training_checks_a_users_network_before_its_first_epoch(tmp_path, monkeypatch):
    """The check is wired into training: a squeezed network is refused before any epoch, naming it."""
    from conftest import easy_caches

    from sonoseg.networks import catalog
    from sonoseg.training import train
    from sonoseg.training.recipe import Recipe

    (tmp_path / "users_mistakes.py").write_text(USERS_MISTAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "users_mistakes", raising=False)
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    catalog.register("mine", builder="users_mistakes:squeezed")
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: pytest.fail("an epoch ran"))
    data = easy_caches(tmp_path, 32)
    with pytest.raises(SonosegError, match=r"network 'mine' \(users_mistakes:squeezed\) maps"):
        train.train(
            network="mine",
            seed=0,
            train_data=data[0],
            val_data=data[1],
            recipe=Recipe(min_epochs=1, max_epochs=1),
            model_out=tmp_path / "m.pt",
            history_out=tmp_path / "h.csv",
            device="cpu",
        )
    assert not (tmp_path / "m.pt").exists()


def test_a_users_network_ending_in_a_sigmoid_is_warned_of_and_a_correct_one_passes(tmp_path, monkeypatch, caplog):
    from sonoseg.networks import catalog, models

    (tmp_path / "users_mistakes.py").write_text(USERS_MISTAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "users_mistakes", raising=False)
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    for name in ("with_sigmoid", "fine"):
        catalog.register(name, builder=f"users_mistakes:{name}")
        model = models.build(name)
        state = torch.get_rng_state()
        models.check_output(name, model, 32)
        assert torch.equal(torch.get_rng_state(), state)  # the training's random stream is left as it was
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "'with_sigmoid'" in warned[0] and "remove that sigmoid" in warned[0]
    # Families of the methods without training are not a network's: the statistics would count it as one.
    with pytest.raises(SonosegError, match="family 'floor' is for the methods without training"):
        catalog.register("floorish", builder="users_mistakes:fine", family="floor")


def test_a_builders_problems_are_found_when_the_study_is_planned(tmp_path, monkeypatch):
    """Found at planning, not at the training job after the data is made: a module Python cannot find is
    a warning (the jobs' own environment may still have it); a misspelt function, or a module that fails
    to import, is an error naming it."""
    from sonoseg.networks import catalog

    (tmp_path / "users_mistakes.py").write_text(USERS_MISTAKES)
    (tmp_path / "broken_nets.py").write_text("import torch\nraise RuntimeError('half-edited')\n")
    (tmp_path / "needs_timm.py").write_text("import timm_not_here\n\ndef build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    networks = {
        "mine": {"builder": "users_mistakes:fine"},
        "lost": {"builder": "not_here.nets:build"},
        "typo": {"builder": "users_mistakes:fien"},
        "broken": {"builder": "broken_nets:build"},
        "needs": {"builder": "needs_timm:build"},
    }
    (warning, needs), errors = catalog.builder_problems(networks)
    assert warning.startswith("custom network 'lost': the module 'not_here.nets' of its builder cannot be imported")
    assert "put it in the workflow's folder" in warning
    # A package the module needs, missing here: a warning too (the jobs' environment may have it).
    assert needs.startswith("custom network 'needs': its module 'needs_timm' imports 'timm_not_here', which is not")
    assert len(errors) == 2
    assert errors[0].startswith("custom network 'typo': users_mistakes (") and "has no function 'fien'" in errors[0]
    assert "it defines: " in errors[0] and "fine" in errors[0]
    assert errors[1] == "custom network 'broken': importing 'broken_nets' failed: RuntimeError: half-edited"


def test_a_users_network_code_is_its_builders_module_and_the_users_modules_it_draws_on(tmp_path, monkeypatch):
    """What the workflow watches of a user's network: the builder's file, then the user's own modules it draws on,
    however deep (a class or a constant imported by name, a module imported whole, a package's relative imports
    and __init__.py, what they import in turn, an import inside a function), looked up in the builder's own
    folder without importing anything; not torch, the standard library, sonoseg, or a module of another folder
    on Python's path (an HPC's `module load`, a pip --target folder); a builder installed in a site-packages
    folder gives its file alone."""
    from sonoseg.networks import catalog

    tag = uuid.uuid4().hex[:8]  # module names of this test's own: Python caches imported modules by name
    code, elsewhere = tmp_path / "workflow", tmp_path / "elsewhere"
    code.mkdir()
    elsewhere.mkdir()
    (code / f"blocks_{tag}.py").write_text(
        f"import json\nimport init_{tag}\nimport other_{tag}\nclass Block:\n    pass\n"
    )
    (code / f"init_{tag}.py").write_text("def kaiming():\n    pass\n")
    (code / f"helpers_{tag}.py").write_text("WIDTH = 8\n")
    (code / f"pkg_{tag}" / "sub").mkdir(parents=True)
    (code / f"pkg_{tag}" / "__init__.py").write_text("from .layers import Conv\n")
    (code / f"pkg_{tag}" / "layers.py").write_text("from . import sizes\nclass Conv:\n    pass\n")
    (code / f"pkg_{tag}" / "sizes.py").write_text("KERNEL = 3\n")
    (code / f"pkg_{tag}" / "sub" / "__init__.py").write_text("from ..sizes import KERNEL\n")
    (code / f"pkg_{tag}" / "sub" / "net.py").write_text("from .. import layers\ndef build():\n    pass\n")
    (code / f"boom_{tag}.py").write_text("raise SystemExit(3)\n")  # imported: it would end the planning
    (code / f"net_{tag}.py").write_text(
        f"import torch\nfrom helpers_{tag} import WIDTH\nfrom blocks_{tag} import Block\nfrom pkg_{tag} import Conv\n"
        f"from sonoseg.networks import models\ndef build():\n    import boom_{tag}\n    return Block()\n"
    )
    (code / f"broken_{tag}.py").write_text("raise RuntimeError('half-edited')\n")
    (elsewhere / f"other_{tag}.py").write_text("X = 1\n")
    installed = tmp_path / "lib" / "python3" / "site-packages"
    installed.mkdir(parents=True)
    (installed / f"theirs_{tag}.py").write_text(f"import helpers_{tag}\ndef build():\n    pass\n")
    for folder in (installed, elsewhere, code):
        monkeypatch.syspath_prepend(str(folder))
    files = [Path(path).relative_to(code).as_posix() for path in catalog.builder_files(f"net_{tag}:build")]
    assert files[0] == f"net_{tag}.py"
    expected = [f"helpers_{tag}.py", f"blocks_{tag}.py", f"init_{tag}.py", f"boom_{tag}.py"]
    expected += [f"pkg_{tag}/__init__.py", f"pkg_{tag}/layers.py", f"pkg_{tag}/sizes.py"]
    assert sorted(files[1:]) == sorted(expected)
    assert not any(name.startswith(f"boom_{tag}") for name in sys.modules)  # looked up, never imported
    # A builder inside a package: the packages' __init__.py files too, and its relative imports.
    files = [Path(path).relative_to(code).as_posix() for path in catalog.builder_files(f"pkg_{tag}.sub.net:build")]
    assert files[0] == f"pkg_{tag}/sub/net.py"
    expected = ["__init__.py", "sub/__init__.py", "layers.py", "sizes.py"]
    assert sorted(files[1:]) == sorted(f"pkg_{tag}/{name}" for name in expected)
    assert [Path(p).name for p in catalog.builder_files(f"broken_{tag}:build")] == [f"broken_{tag}.py"]
    assert catalog.builder_files(f"theirs_{tag}:build") == [str(installed / f"theirs_{tag}.py")]
    assert catalog.builder_files("not_here_at_all:build") == []


def test_a_built_in_networks_code_is_its_module_and_the_network_modules_it_imports():
    # What an edit retrains one built-in network for: not the catalog nor the packages' __init__.py, which
    # every network's import passes through; the U-net family shares its module, so its digest.
    networks = Path(catalog.__file__).resolve().parent

    def code(name):
        return [
            p.relative_to(networks).as_posix() for p in catalog._built_in_code(catalog.CATALOG[name].builder, networks)
        ]

    assert code("egeunet") == ["models/egeunet.py", "bilinear.py", "models/malunet.py"]
    assert code("fcn8s") == ["models/fcn.py"]
    digests = {name: catalog.network_code_digest(name) for name in catalog.BUILT_IN_NETWORKS}
    assert all(len(digest) == 16 for digest in digests.values())
    assert digests["unet"] == digests["lighter_unet_c1"] != digests["malunet"]
    assert digests["egeunet"] != digests["malunet"]  # its own module besides


def test_the_training_fingerprint_reads_the_code_a_training_runs_and_no_other():
    """An upgrade that moved `segment` into a module of its own (serving/segmenter.py) made every finished training
    unusable for adoption: the fingerprint read every file of data/, serving/ and training/. It reads what a
    training imports now: every module a training loads is in it, and segment, the export, the floors and the
    external sets' simulator are not."""
    from sonoseg.training import reuse

    sources = set(reuse.training_sources())
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sonoseg.training import recipe, reuse, train; from sonoseg.networks import catalog, "
            "models; [models.build(n) for n in catalog.BUILT_IN_NETWORKS]; "
            "print(' '.join(m for m in sys.modules if m.startswith('sonoseg')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    folders = ("data", "networks", "serving", "training")
    files = set()
    for name in loaded:  # a module's file, or a package's __init__.py
        base = PACKAGE.joinpath(*name.split(".")[1:])
        files |= {
            p.relative_to(PACKAGE).as_posix() for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()
        }
    trained_with = {f for f in files if "/" not in f or f.split("/")[0] in folders}
    assert trained_with and trained_with <= sources, trained_with - sources
    assert {"training/train.py", "serving/modelio.py", "data/preprocess.py", "networks/models/unet.py"} <= sources
    assert not sources & {"serving/segmenter.py", "serving/export.py", "data/simulated.py", "networks/baseline.py"}
    assert not [f for f in sources if f.startswith(("analysis/", "study/"))]


def test_the_training_code_walk_follows_relative_and_lazy_imports_and_a_users_sonoseg_imports(tmp_path):
    """What the fingerprint's walk must not miss (a miss would adopt a changed training): a relative import, one in
    a function's body, a package's __init__ code; and a user's network drawing on a sonoseg module. Left out: an
    import a module-level __getattr__ makes on request (sonoseg.serving's Segmenter, which no training asks for)."""
    from sonoseg.networks import catalog
    from sonoseg.training import reuse

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from . import a\n\ndef build():\n    from pkg import built\n\n"
        "def __getattr__(name):\n    from pkg import lazy\n"
    )
    (package / "a.py").write_text("def f():\n    from .b import x\n")
    for name in ("b", "built", "lazy"):
        (package / f"{name}.py").write_text("x = 1\n")
    start = {package / "__init__.py": "pkg"}
    found = {p.name for p in catalog.imported_files(dict(start), tmp_path, attribute_imports=False)}
    assert found == {"__init__.py", "a.py", "b.py", "built.py"}
    assert "lazy.py" in {p.name for p in catalog.imported_files(dict(start), tmp_path)}  # the workflow's own walk
    users = tmp_path / "my_networks.py"
    users.write_text("import torch\nfrom sonoseg.data import synth\n\ndef my_net():\n    return torch.nn.Identity()\n")
    assert "data/synth.py" in set(reuse.training_sources((str(users),))) - set(reuse.training_sources())


def test_serving_refuses_an_output_of_other_than_one_channel(tmp_path):
    """A model file from elsewhere whose network returns two channels is refused, not read by its first."""
    import numpy as np

    from sonoseg.serving import infer

    with pytest.raises(SonosegError, match=r"m.pt: the network's output is shaped \(1, 2, 4, 4\)"):
        infer.one_channel(np.zeros((1, 2, 4, 4)), tmp_path / "m.pt")
    assert infer.one_channel(np.ones((3, 1, 4, 4)), tmp_path / "m.pt").shape == (3, 4, 4)


@pytest.mark.slow
def test_a_users_network_runs_through_the_workflow(workflow_copy, monkeypatch):
    """docs/extending.md, as a user follows it: examples/my_networks.py in the workflow folder, one config
    entry; the network appears in the beyond-the-paper table, the cost table and the report, then trains,
    predicts and is summarised as its own target; segment serves its model file."""
    shutil.copy(REPO / "examples" / "my_networks.py", workflow_copy / "my_networks.py")
    config = {
        **TINY,
        "study": "mine",
        "networks": ["lighter_unet_c1"],
        "ladder": {"enabled": False},
        "baselines": [],
        "train": {**TINY["train"], "overrides": {}},
        "custom_networks": {"tiny_unet": {"builder": "my_networks:tiny_unet", "label": "Tiny U-net (mine)"}},
    }
    path = write_config(workflow_copy, config)
    # The module beside the Snakefile, and no PYTHONPATH: the jobs import it as the planning does.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    if True:
        dry = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", path], workflow_copy)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert "cannot be imported from here" not in dry.stderr
        assert "--network tiny_unet" in dry.stdout and "results/mine/tables/beyond.csv" in dry.stdout
        assert "sonoseg cost --networks lighter_unet_c1 tiny_unet" in dry.stdout
        target = "results/mine/networks/tiny_unet.csv"
        run = run_snakemake([target, "--cores", "2", "--configfile", path], workflow_copy)
        assert run.returncode == 0, run.stderr[-3000:]
        assert jobs_of(run.stdout + run.stderr)["train"] == 1
        table = "results/mine/tables/beyond.md"
        run = run_snakemake([table, "--cores", "2", "--configfile", path], workflow_copy)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Tiny U-net (mine)" in (workflow_copy / table).read_text()  # the config's label, not its name
        # A new label is the tables' business: no training reruns for it, nor the cost table's timing (they read the
        # builder alone).
        relabelled = {
            **config,
            "custom_networks": {"tiny_unet": {**config["custom_networks"]["tiny_unet"], "label": "Tiny"}},
        }
        dry = run_snakemake(
            ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, relabelled)], workflow_copy
        )
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert "train" not in jobs_of(dry.stdout) and "table" in jobs_of(dry.stdout)
        assert not {"cost_prepare", "cost"} & set(jobs_of(dry.stdout))  # built and timed as before: not again
        path = write_config(workflow_copy, config)
        summary = pd.read_csv(workflow_copy / target)
        assert summary["dice"].notna().all() and summary["parameters"].item() > 0
        model = workflow_copy / "results" / "mine" / "runs" / "tiny_unet" / "fold0" / "seed0" / "model.pt"
        assert torch.load(model, weights_only=True)["builder"] == "my_networks:tiny_unet"
        # An edit of the network's code retrains it and measures its cost again; nothing else trains.
        module = workflow_copy / "my_networks.py"
        code = module.read_text()
        module.write_text(code.replace("nn.Conv2d(8, 8, 3, padding=1)", "nn.Conv2d(8, 8, 5, padding=2)"))
        dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", path], workflow_copy)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert "run=tiny_unet" in dry.stdout and "run=lighter_unet_c1," not in dry.stdout
        assert jobs_of(dry.stdout)["train"] == 1 and jobs_of(dry.stdout)["cost_prepare"] == 1
        module.write_text(code)  # back to the network its model file was trained with, for segment below
        # Its layers in a file of their own: an edit there retrains it too (a touch, or the file saved unchanged,
        # reruns nothing: Snakemake compares an input's content).
        layers = workflow_copy / "my_layers.py"
        layers.write_text("from torch import nn\n\nWIDTH = 8\n")
        module.write_text(code.replace("from torch import nn\n", "from my_layers import WIDTH\nfrom torch import nn\n"))
        run = run_snakemake([target, "--cores", "2", "--configfile", path], workflow_copy)
        assert run.returncode == 0, run.stderr[-3000:]
        assert jobs_of(run.stdout + run.stderr)["train"] == 1  # the module's content changed: it retrains
        layers.touch()
        dry = run_snakemake([target, "-n", "--cores", "1", "--configfile", path], workflow_copy)
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout, dry.stdout[-2000:]
        layers.write_text("from torch import nn\n\nWIDTH = 16\n")
        dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", path], workflow_copy)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert jobs_of(dry.stdout)["train"] == 1 and jobs_of(dry.stdout)["cost_prepare"] == 1
        assert "run=tiny_unet" in dry.stdout and "run=lighter_unet_c1," not in dry.stdout
        # The edited file older than the model (cp -p, rsync -a, an unpacked archive): Snakemake compares an
        # input's content only when it is newer; the code's digest, a param, still retrains the network.
        os.utime(layers, (1577836800, 1577836800))  # 2020-01-01
        dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", path], workflow_copy)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert jobs_of(dry.stdout)["train"] == 1 and jobs_of(dry.stdout)["cost_prepare"] == 1
        assert "run=tiny_unet" in dry.stdout and "run=lighter_unet_c1," not in dry.stdout
        module.write_text(code)
        monkeypatch.setenv("PYTHONPATH", str(workflow_copy))  # segment, outside the workflow: importable there
        images = sorted((workflow_copy / "results" / "mine" / "data" / "synthetic" / "images").glob("*.png"))[:2]
        out = workflow_copy / f"masks-{uuid.uuid4().hex[:6]}"
        segment = subprocess.run(
            [
                str(BIN / "sonoseg"),
                "segment",
                "--model",
                str(model),
                "--outdir",
                str(out),
                "--no-progress",
                *map(str, images),
            ],
            capture_output=True,
            text=True,
        )
        assert segment.returncode == 0, segment.stderr
        assert len(list(out.glob("*_mask.png"))) == 2
    assert sys.modules.get("my_networks") is None  # the test process itself never imported the user's module


def test_the_readmes_study_commands_plan_the_paper_study(workflow_copy):
    """What a user types on a GPU workstation (README): the target first, then --resources; and the plain
    form, whose default profile sets gpu=1. (With the target last Snakemake's own parser takes it as a
    resource and stops: the README says so.)"""
    (workflow_copy / "profiles").symlink_to("workflow/profiles")
    for command in (["all", "-n", "--cores", "8", "--resources", "gpu=1"], ["-n", "--cores", "8"]):
        result = run_snakemake(command, workflow_copy)
        assert result.returncode == 0, result.stderr[-2000:]
        assert jobs_of(result.stdout)["train"] == 17 * 3 + 17 * 5 + 7 * 3  # networks x seeds, candidates, ladder
    one = run_snakemake(["results/paper/networks/light_unet.csv", "-n", "--cores", "8"], workflow_copy)
    assert one.returncode == 0 and jobs_of(one.stdout)["train"] == 3 + 5  # its seeds, its selection candidates


def test_confirmation_runs_the_same_protocol_on_new_patients(workflow_copy):
    """`make confirm`: the study's config with config/confirm.yaml over it and its name suffixed: a new
    phantom seed, every other setting the same, its own results folder."""
    study = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", "config/quick.yaml"], workflow_copy)
    confirm = run_snakemake(
        ["all", "-n", "-p", "--cores", "1", "--configfile", "config/quick.yaml", "config/confirm.yaml"]
        + ["--config", "study=quick_confirm"],
        workflow_copy,
    )
    assert study.returncode == 0 and confirm.returncode == 0, confirm.stderr[-2000:]
    assert "sonoseg synth results/quick_confirm/data/synthetic --patients 48 --seed 1001 " in confirm.stdout
    assert jobs_of(confirm.stdout) == jobs_of(study.stdout)
    make = (REPO / "Makefile").read_text()
    assert "--configfile $(CONFIG) config/confirm.yaml --config study=$(STUDY)_confirm" in make


# Every committed config in config/, with the configs its header says it is merged over (after
# config/config.yaml, which the workflow always loads first) and any --config the Makefile adds.
STUDY_CONFIGS = {
    "config.yaml": ([], []),
    "quick.yaml": ([], []),
    "confirm.yaml": (["quick.yaml"], ["study=quick_confirm"]),
    "quick_ensemble.yaml": (["quick.yaml"], []),
    "cpu.yaml": ([], []),
    "fair.yaml": ([], []),
    "fair_scales.yaml": (["fair.yaml"], []),
}


def test_every_committed_config_is_listed():
    """A config added to config/ joins the dry runs below."""
    assert sorted(STUDY_CONFIGS) == sorted(p.name for p in (REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(STUDY_CONFIGS))
def test_every_committed_config_builds_its_study(workflow_copy, name):
    """Each committed study still validates against the schema and builds its run sheet and DAG, with
    the configs it is merged over: a change to the schema or the run sheet cannot leave one behind."""
    bases, overrides = STUDY_CONFIGS[name]
    files = [f"config/{f}" for f in [*bases, name]]
    extra = ["--config", *overrides] if overrides else []
    result = run_snakemake(["all", "-n", "--cores", "1", "--configfile", *files, *extra], workflow_copy)
    assert result.returncode == 0, result.stderr[-2000:]
    assert jobs_of(result.stdout)["train"] > 0
    if name == "quick_ensemble.yaml":  # three seeds: every network also tested as their ensemble
        assert "--ensemble" in result.stdout and jobs_of(result.stdout)["train"] > 3 * 7


def test_a_built_in_network_records_its_modules_and_a_change_there_is_warned_of(tmp_path, caplog):
    # A change in a built-in network's forward alone leaves its layers (and their repr) as they were.
    from sonoseg.networks import models

    model = models.build("lighter_unet_c1")
    record = models.code_record("lighter_unet_c1", model)
    assert sorted(record["files"]) == ["bilinear.py", "models/unet.py"]
    path = tmp_path / "model.pt"
    changed = {**record, "files": {**record["files"], "models/unet.py": "0" * 64}}
    # As recorded: nothing said; its module changed: said; a model file from before a built-in network's files
    # were recorded: its architecture alone is compared.
    for code, said in (
        (record, None),
        (changed, "models/unet.py changed"),
        ({"architecture": record["architecture"]}, None),
    ):
        caplog.clear()
        modelio.save_model(path, network="lighter_unet_c1", state_dict=model.state_dict(), input_size=32, code=code)
        modelio.load_model(path)
        assert ("not the code it was trained with" in caplog.text) is (said is not None)
        assert said is None or said in caplog.text


def test_a_model_served_under_other_code_than_it_was_trained_with_is_warned_of(tmp_path, monkeypatch, caplog):
    """The weights of a user's network fit after a parameter-free change (an activation), and its masks would
    change without a word: the model file records the code that built it, and loading it under other code says
    what changed. Code as it was: no warning."""
    from sonoseg.networks import catalog, models

    tag = uuid.uuid4().hex[:8]
    layers = tmp_path / f"layers_{tag}.py"
    layers.write_text("from torch import nn\n\ndef act():\n    return nn.LeakyReLU(0.1)\n")
    (tmp_path / f"served_{tag}.py").write_text(
        f"from torch import nn\nfrom layers_{tag} import act\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), act())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    catalog.register("served", builder=f"served_{tag}:build")
    model = models.build("served")
    path = tmp_path / "model.pt"
    record = models.code_record("served", model)
    assert sorted(record["files"]) == [f"layers_{tag}.py", f"served_{tag}.py"]
    modelio.save_model(path, network="served", state_dict=model.state_dict(), input_size=32, code=record)
    monkeypatch.setattr(catalog, "CATALOG", {k: v for k, v in catalog.CATALOG.items() if k != "served"})  # served
    modelio.load_model(path)
    assert "not the code it was trained with" not in caplog.text
    for change, said in (
        ("# a comment\n", f"{layers.name} changed)"),  # the file, not the layers: its forward may differ
        ("def act():\n    return nn.Tanh()\n", f"the network as built now differs (its layers); {layers.name} changed"),
    ):
        layers.write_text(
            "from torch import nn\n\n"
            + change
            + ("" if "def act" in change else "def act():\n    return nn.LeakyReLU(0.1)\n")
        )
        for module in (f"layers_{tag}", f"served_{tag}"):
            sys.modules.pop(module, None)
        caplog.clear()
        modelio.load_model(path)
        assert "model.pt: the code that builds network served is not the code it was trained with" in caplog.text
        assert said in caplog.text


def test_the_slurm_profile_keeps_the_log_folders_of_jobs_pending_in_another_run():
    """The SLURM plugin's clean-up of old logs, at the end of every run, also removed every empty folder under
    .snakemake/slurm_logs/: a job still pending in another run of the same checkout lost its log folder and
    failed at once, without a log. The profile turns the clean-up off (an age of 0 days: none)."""
    import yaml

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["slurm-delete-logfiles-older-than"] <= 0
    assert profile["executor"] == "slurm"


def test_a_builder_that_needs_arguments_or_a_name_alike_but_for_case_is_refused_at_planning(tmp_path, monkeypatch):
    """A probe's builder needing arguments passed planning and failed at its training (after the data was made,
    and retried); a network named lighter_unet_C1 beside the built-in lighter_unet_c1 was taken, though its
    folders would be the built-in's on macOS or Windows."""
    from sonoseg.networks import catalog

    (tmp_path / "users_mistakes.py").write_text(USERS_MISTAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    _, errors = catalog.builder_problems(
        {"wide": {"builder": "users_mistakes:needs_width"}, "mine": {"builder": "users_mistakes:fine"}}
    )
    assert errors == [
        "custom network 'wide': its builder users_mistakes:needs_width needs argument(s) width, and sonoseg calls it "
        "with none: give them defaults, or point the builder at a function of none"
    ]
    with pytest.raises(SonosegError, match=r"'lighter_unet_C1': differs from 'lighter_unet_c1' only in letter case"):
        catalog.register("lighter_unet_C1", builder="users_mistakes:fine")
    assert "lighter_unet_C1" not in catalog.CATALOG
