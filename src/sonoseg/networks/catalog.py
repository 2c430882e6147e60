"""The network catalog: every fact about the study's methods that does not need torch, in one place.

Each entry says how to build the network (``module:function`` and its arguments), its label and
family, the kind of backbone ImageNet weights can initialise, which of the paper's tables lists it,
the paper's numbers and the parameter count the paper printed where that differs from the network.
The registry (``sonoseg.networks.models``), the paper tables (``sonoseg.analysis.paper``), the tables, the figures,
the cost table and the workflow read it; a test ties the config schema's list of networks to it.

A network of the user's own is one more entry: ``custom_networks`` in the config (docs/extending.md)
calls :func:`register`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sonoseg.errors import SonosegError

# The backbone kinds ImageNet weights can initialise, with how to save such a file (docs/method.md).
BACKBONE_KINDS = ("vgg16", "resnet101", "mobilenet_v2", "xception")

# How to write each kind's file on a machine with internet (torchvision's ImageNet weights).
SAVE_HINTS = {
    "vgg16": 'torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict(), "vgg16.pth")',
    "resnet101": 'torch.save(torchvision.models.resnet101(weights="IMAGENET1K_V1").state_dict(), "resnet101.pth")',
    "mobilenet_v2": 'torch.save(torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").state_dict(), '
    '"mobilenet_v2.pth")',
    "xception": "torchvision has no Xception: save a state dict of sonoseg's AlignedXceptionBackbone "
    "(or jfzhang95's AlignedXception backbone, matched tensor by tensor in order)",
}

TABLES = ("table1", "table2", "beyond")  # the paper's two tables, and networks that came after it

# A network's name becomes folder and file names and a word on the command line: a letter, then letters, digits
# and underscores. The config schema's custom_networks propertyNames pattern is this one (it cannot import it:
# tests/test_library_use.py holds the two equal); register applies it to a name given from Python.
NETWORK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Entry:
    """One method of the study: a network (built by ``builder``) or a floor without training."""

    name: str
    label: str
    family: str
    builder: str = ""  # "module:function"; empty for a method without a network (a floor)
    arguments: tuple = ()
    backbone: str | None = None  # the backbone kind ImageNet weights can initialise
    table: str | None = None  # "table1", "table2" or "beyond"; None: listed in no table of networks
    paper: tuple[float, float, float, float] | None = None  # Dice mean, std, HD95 mean, std (the paper's)
    printed_parameters: float | None = None  # what the paper printed, where it differs from the network
    also_in: tuple[str, ...] = ()  # further tables (U-net is in Table 1 and Table 2)

    @property
    def is_network(self) -> bool:
        return bool(self.builder)

    def in_table(self, table: str) -> bool:
        return self.table == table or table in self.also_in


_UNET_PAPER = (0.929, 0.002, 13.92, 0.34)
_LIGHTER_PAPER = {
    128: (0.928, 0.001, 13.93, 0.50),
    64: (0.926, 0.001, 14.21, 0.24),
    32: (0.926, 0.001, 14.51, 0.09),
    16: (0.922, 0.003, 15.18, 0.43),
    8: (0.921, 0.002, 15.14, 0.43),
    4: (0.920, 0.003, 15.22, 0.58),
    2: (0.920, 0.001, 15.52, 0.19),
    1: (0.917, 0.001, 15.98, 0.23),
}
LIGHTER_CHANNELS = tuple(sorted(_LIGHTER_PAPER))

_MODELS = "sonoseg.networks.models."  # the built-in builders' package

_BUILT_IN = [
    Entry("unet", "U-net", "U-net", _MODELS + "unet:unet", table="table1", also_in=("table2",), paper=_UNET_PAPER),
    Entry("light_unet", "Light U-net", "U-net", _MODELS + "unet:light_unet", table="table2",
          paper=(0.927, 0.001, 14.16, 0.47)),
    *[
        Entry(f"lighter_unet_c{c}", f"Lighter U-net @{c}", "U-net", _MODELS + "unet:lighter_unet", (c,),
              table="table2", paper=_LIGHTER_PAPER[c])
        for c in LIGHTER_CHANNELS
    ],
    Entry("fcn8s", "FCN-8s", "FCN", _MODELS + "fcn:FCN", (2,), "vgg16", "table1", (0.924, 0.001, 14.37, 0.16)),
    Entry("fcn16s", "FCN-16s", "FCN", _MODELS + "fcn:FCN", (1,), "vgg16", "table1", (0.920, 0.003, 14.88, 0.42)),
    Entry("fcn32s", "FCN-32s", "FCN", _MODELS + "fcn:FCN", (0,), "vgg16", "table1", (0.909, 0.005, 15.89, 0.81)),
    Entry("deeplabv3plus_resnet101", "DeepLab v3+ (ResNet-101)", "DeepLab v3+",
          _MODELS + "deeplab:deeplab_resnet101", (), "resnet101", "table1", (0.922, 0.003, 14.32, 0.63),
          printed_parameters=54.7e6),  # the Aligned-Xception count; ResNet-101 has 59,339,169
    Entry("deeplabv3plus_mobilenetv2", "DeepLab v3+ (MobileNet)", "DeepLab v3+",
          _MODELS + "deeplab:deeplab_mobilenetv2", (), "mobilenet_v2", "table1", (0.904, 0.003, 16.88, 0.47)),
    # Extra row: the backbone whose count (54.7 M) the paper printed for "ResNet-101".
    Entry("deeplabv3plus_xception", "DeepLab v3+ (Aligned Xception, extra)", "DeepLab v3+",
          _MODELS + "deeplab:deeplab_xception", (), "xception", "table1"),
    # Ours, beyond the paper: U-net at half width, light in CPU time (README, "Deploy").
    Entry("slim_unet", "Slim U-net (ours, extra)", "U-net", _MODELS + "slim_unet:slim_unet", table="table2"),
    # Lightweight segmenters that came after the paper (docs/modern_networks.md: the authors' repository
    # and commit each was re-implemented from, and its count, which ours equals).
    Entry("unext", "UNeXt (2022)", "lightweight (after 2021)", _MODELS + "unext:unext", table="beyond"),
    Entry("cmunext", "CMUNeXt (2023)", "lightweight (after 2021)", _MODELS + "cmunext:cmunext", table="beyond"),
    Entry("malunet", "MALUNet (2022)", "lightweight (after 2021)", _MODELS + "malunet:malunet", table="beyond"),
    Entry("egeunet", "EGE-UNet (2023)", "lightweight (after 2021)", _MODELS + "egeunet:egeunet", table="beyond"),
    # Methods without training, no parameters (sonoseg.networks.baseline, docs/marks_and_floors.md). A *floor*
    # never uses anything derived from the test image's own annotation (statistics fitted on training
    # masks are allowed): a network counts as segmenting beyond the image's cues only when it beats
    # every floor. A *reference* reads something derived from the test annotation (the phantom draws
    # its calipers from the mask): it is compared with, never a floor to beat.
    Entry("threshold_baseline", "Threshold baseline (floor: no training; beyond the paper)", "floor"),
    Entry(
        "caliper_reader",
        "Caliper reader (reference: reads the calipers, drawn from the annotation; beyond the paper)",
        "reference",
    ),
    Entry("position_prior", "Position prior (floor: mean training mask; beyond the paper)", "floor"),
    Entry(
        "dark_in_prior",
        "Dark region in the prior's window (floor: threshold and training-mask prior combined; beyond the paper)",
        "floor",
    ),
]  # fmt: skip

CATALOG: dict[str, Entry] = {entry.name: entry for entry in _BUILT_IN}
BUILT_IN_NETWORKS = tuple(name for name, entry in CATALOG.items() if entry.is_network)
_BUILT_IN_METHODS = frozenset(CATALOG)  # sonoseg's own methods, networks and not: no user's network is named so


def entry(name: str) -> Entry:
    try:
        return CATALOG[name]
    except KeyError:
        raise SonosegError(f"unknown method {name!r}; known: {', '.join(CATALOG)}") from None


def networks() -> list[str]:
    """Every network that can be built, built-in first, then the user's own."""
    return [name for name, item in CATALOG.items() if item.is_network]


# The study's tables, by kind: the paper's two tables of networks and the one beyond the paper (each
# entry names its own), the tuning ladder, and (in the report) the recipe selection's choices.
NETWORK_TABLES = ("table1", "table2", "beyond")
STUDY_TABLES = (*NETWORK_TABLES, "ladder")
# The paired tables (tables/<name>.csv and .md; their runs paired by patient) and the family of comparisons
# each is (sonoseg.analysis.comparisons.PAIRED_FAMILIES): the caliper ablation, reliance on the marks,
# flip averaging, the ensemble, the augmentation choice's two options.
PAIRED_TABLES = {
    "marks_ablation": "ablation",
    "marks_reliance": "reliance",
    "tta": "tta",
    "ensemble": "ensemble",
    "augmentation": "augmentation",
}
REPORT_TABLES = (*STUDY_TABLES, "selection", "generalization", "subgroups", *PAIRED_TABLES)

UNTRAINED_FAMILIES = ("floor", "reference")  # methods without a network: the config's `baselines`


def floors() -> list[str]:
    """The floors: no training, nothing derived from the test image's annotation."""
    return [name for name, item in CATALOG.items() if item.family == "floor"]


def references() -> list[str]:
    """The references: no training, but they read something derived from the test annotation."""
    return [name for name, item in CATALOG.items() if item.family == "reference"]


def untrained() -> list[str]:
    """Every method without a network (floors and references), in catalog order."""
    return [name for name, item in CATALOG.items() if not item.is_network]


def label(name: str) -> str:
    return CATALOG[name].label if name in CATALOG else name


def register(name: str, builder: str, label: str = "", family: str = "user", table: str = "beyond", **facts) -> Entry:
    """Add a network of the user's own (config ``custom_networks``): ``builder`` is ``module:function``,
    a function of no arguments that returns the network (3-channel input, 1-channel logits). ``name`` obeys
    NETWORK_NAME and is no built-in method's; registered again, it must come with the builder it has."""
    if not isinstance(name, str) or not NETWORK_NAME.fullmatch(name):
        raise SonosegError(
            f"custom network {name!r}: a name is a letter, then letters, digits or underscores (it becomes folder "
            "and file names; docs/extending.md); choose another"
        )
    if name in _BUILT_IN_METHODS:
        raise SonosegError(f"custom network {name!r}: the name is taken by a built-in method; choose another")
    if name in CATALOG and CATALOG[name].builder != builder:  # the same builder again: a config read once more
        raise SonosegError(
            f"custom network {name!r}: already registered by you with builder {CATALOG[name].builder!r}, not "
            f"{builder!r}; choose another name, or register it with the same builder"
        )
    alike = [other for other in CATALOG if other != name and other.casefold() == name.casefold()]
    if alike:  # its runs/ and networks/ folders would be the other's on macOS and Windows file systems
        raise SonosegError(
            f"custom network {name!r}: differs from {alike[0]!r} only in letter case, and their folders would be one "
            "on a case-insensitive file system (macOS, Windows); choose another name"
        )
    module, _, function = builder.partition(":")
    if not module or not function:
        raise SonosegError(f"custom network {name!r}: builder {builder!r} must read 'module:function'")
    if table not in TABLES:
        raise SonosegError(f"custom network {name!r}: table {table!r} is not one of {TABLES}")
    if family in UNTRAINED_FAMILIES:  # the statistics compare every network with these, never count one among them
        raise SonosegError(f"custom network {name!r}: family {family!r} is for the methods without training")
    CATALOG[name] = Entry(name, label or name, family, builder, table=table, **facts)
    return CATALOG[name]


# The order of the rows as the paper printed them (its extra rows where they belong); the catalog's
# other entries of a table follow in catalog order.
ROW_ORDER = {
    "table1": ("deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet101", "deeplabv3plus_xception", "fcn32s", "fcn16s",
               "fcn8s", "unet"),
    "table2": ("unet", "light_unet", *(f"lighter_unet_c{c}" for c in sorted(LIGHTER_CHANNELS, reverse=True)),
               "slim_unet"),
}  # fmt: skip


def builder_file(builder: str) -> str | None:
    """The file of a builder's module (``module:function``), found without importing it; None when Python
    cannot find the module from here (or it has no file)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(str(builder).partition(":")[0])
    except (ImportError, ValueError):  # a parent package missing, an empty name
        return None
    return found.origin if found is not None and found.has_location else None


def builder_files(builder: str) -> list[str]:
    """The files of a user's network code: its builder's module file, then the files of the user's own modules
    it imports, however deep (``from my_layers import Block``, ``import helpers``, a package's relative imports
    and its __init__.py files), read from the files' import statements: the workflow's inputs of the network's
    trainings, so that an edit of any of them retrains it (Snakemake compares an input's content).

    The user's own modules are those in the folder the builder's module is found in (the workflow's folder, or
    the top of the user's package), looked up there file by file: nothing is imported, and torch, the
    standard library and other installed packages are not followed wherever they are installed. A builder
    in an installed package (site-packages) gives its file alone."""
    return [str(path) for path in _builder_code(builder)[0]]


def builder_digests(builder: str) -> dict[str, str]:
    """Each file of a user's network code (builder_files) -> the sha256 of its content, named by its path under
    the builder's folder (or its file name for a builder installed elsewhere): what a model file records, so
    that serving it under other code is noticed wherever the study was moved."""
    import hashlib

    files, top = _builder_code(builder)
    digests = {}
    for file in files:
        where = file.resolve()
        name = where.relative_to(top).as_posix() if top is not None and where.is_relative_to(top) else where.name
        try:
            digests[name] = hashlib.sha256(where.read_bytes()).hexdigest()
        except OSError:  # gone since it was listed: not a digest
            continue
    return digests


def user_code_files(name: str) -> list[Path]:
    """The files of a network of the user's own (builder_files, its module first); [] for a built-in network,
    whose code is sonoseg's and is stamped with sonoseg's commit."""
    if name in BUILT_IN_NETWORKS or name not in CATALOG:
        return []
    files, top = _builder_code(CATALOG[name].builder)
    # An installed package's (site-packages: no folder of the user's) is not judged by a repository around it:
    # a venv untracked inside a deploy repository would stamp every training +dirty.
    return files if top is not None else []


def network_code_digest(name: str, builder: str | None = None) -> str:
    """The content of network ``name``'s own code as one digest (16 hex digits): for a network of the user's own
    (``builder``: its spec), the files of builder_digests; for a built-in one, its module and the network modules
    that module imports (_built_in_code: models/malunet.py, bilinear.py; not the catalog nor the packages'
    __init__). A param of the network's trainings and of the cost table (workflow/rules/common.smk): Snakemake
    reruns a job whose params changed whatever the files' times say, so an edit of a network retrains that network
    alone, and a file put back with an older time (cp -p, rsync -a, an unpacked archive), which Snakemake's own
    comparison of inputs passes over, is noticed as an edit is. '' where no file is found."""
    import hashlib

    digests = network_code_digests(name, builder)
    if not digests:
        return ""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def network_code_digests(name: str, builder: str | None = None) -> dict[str, str]:
    """Each file of network ``name``'s own code -> the sha256 of its content (network_code_digest's files): a
    built-in network's named by their path in this package (models/malunet.py), a user's as builder_digests
    names them; {} where none is found."""
    import hashlib

    if builder is None and name in BUILT_IN_NETWORKS:
        networks = Path(__file__).resolve().parent
        return {
            path.relative_to(networks).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in _built_in_code(CATALOG[name].builder, networks)
        }
    return builder_digests(builder or CATALOG[name].builder) if (builder or name in CATALOG) else {}


def _built_in_code(builder: str, networks: Path) -> list[Path]:
    """A built-in network's module file and, however deep, the files of the modules under ``networks`` (this
    package's folder) it imports, but the catalog and the packages' __init__.py (the registry, which every
    network's import passes through: an edit there is no edit of one network)."""
    module, first = str(builder).partition(":")[0], builder_file(builder)
    if first is None:
        return []
    top = networks.parents[1]  # the folder the sonoseg package is in, wherever it is installed
    files = {Path(first).resolve(): _package_of(module, first)}

    def network_module(path: Path) -> bool:
        return path.is_relative_to(networks) and path.name not in ("__init__.py", "catalog.py")

    return list(imported_files(files, top, network_module))


def _builder_code(builder: str) -> tuple[list[Path], Path | None]:
    """builder_files' files (the builder's module file first, as Python names it) and the folder they were
    looked up in (None for a builder installed elsewhere, or one Python cannot find)."""
    module = str(builder).partition(":")[0]
    first = builder_file(builder)
    if first is None:
        return [], None
    top = _code_folder(module, Path(first))
    if top is None:
        return [Path(first)], None
    files = {Path(first).resolve(): _package_of(module, first)}
    for prefix in _prefixes(module)[:-1]:  # the builder's packages, whose __init__.py Python runs first
        found = _find_in(prefix, top)
        if found is not None:
            files.setdefault(found[0], found[1])
    files = imported_files(files, top)
    return [Path(first), *list(files)[1:]], top


def imported_files(
    files: dict[Path, str], top: Path, keep=lambda path: True, attribute_imports: bool = True
) -> dict[Path, str]:
    """``files`` (file -> the package its relative imports start from) with the files under ``top`` of the modules
    they import, however deep, each name's packages too (their __init__.py), those ``keep`` accepts; read from
    the import statements, nothing imported. ``attribute_imports`` False: not the imports inside a module-level
    ``__getattr__``, which run only when that attribute is asked for (sonoseg.serving's Segmenter)."""
    pending = list(files.items())
    while pending:
        path, package = pending.pop()
        for name in _imports_in(path, package, attribute_imports):
            for prefix in _prefixes(name):
                found = _find_in(prefix, top)
                if found is not None and found[0] not in files and keep(found[0]):
                    files[found[0]] = found[1]
                    pending.append(found)
    return files


def _code_folder(module: str, file: Path) -> Path | None:
    """The folder on Python's path that the module ``module`` (in ``file``) was found in; None when it is an
    installed package's (a site-packages or dist-packages folder, or the interpreter's own)."""
    import sys

    file = file.resolve()
    depth = module.count(".") + (2 if file.name == "__init__.py" else 1)
    top = file.parents[depth - 1]
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    if any(part.endswith("-packages") for part in top.parts) or any(top.is_relative_to(p) for p in installed):
        return None
    return top


def _prefixes(name: str) -> list[str]:
    """a, a.b, a.b.c for a.b.c: each a module Python imports on the way."""
    parts = name.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def _package_of(module: str, file: str | Path) -> str:
    """The package a module's relative imports start from: itself for a package's __init__.py."""
    return module if Path(file).name == "__init__.py" else module.rpartition(".")[0]


def _find_in(name: str, top: Path) -> tuple[Path, str] | None:
    """(file, package) of the module ``name`` as a source file under ``top``, looked up part by part as Python
    would find it there, without importing anything; None where it is not there (another folder's, installed,
    compiled, a name that is no module: a class imported from one)."""
    from importlib.machinery import PathFinder

    locations, spec = [str(top)], None
    for part in name.split("."):
        if locations is None:  # a module's attribute, not a submodule
            return None
        try:
            spec = PathFinder.find_spec(part, locations)
        except (ImportError, ValueError, OSError):
            return None
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations) if spec.submodule_search_locations is not None else None
    if spec is None or not spec.has_location or not str(spec.origin).endswith(".py"):
        return None  # a namespace package (no file), or an extension module
    return Path(spec.origin).resolve(), _package_of(name, spec.origin)


def _imports_in(path: Path, package: str, attribute_imports: bool = True) -> list[str]:
    """The modules a file's import statements name (for ``from a import b``, a and a.b: b may be a module);
    ``attribute_imports`` False: leaving out those in a module-level ``def __getattr__`` (imported_files)."""
    import ast
    import importlib.util

    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):  # planning names a module that does not import
        return []
    if not attribute_imports:
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):  # a relative import beyond its top package
                continue
            names += [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
    return names


def builder_problems(custom_networks: dict) -> tuple[list[str], list[str]]:
    """What planning can tell of the user's builders before any data is made: (warnings, errors).

    A module Python cannot find from here is a warning (its jobs would fail at training unless their
    environment has it: a conda env of the jobs', say). A module that is found but fails to import, or has
    no such function, is an error naming it: every job of that network would fail the same way."""
    import importlib

    warnings, errors = [], []
    for name, spec in custom_networks.items():
        module_name, _, function = str(spec.get("builder", "")).partition(":")
        if builder_file(spec.get("builder", "")) is None:
            warnings.append(
                f"custom network {name!r}: the module {module_name!r} of its builder cannot be imported from here; "
                "put it in the workflow's folder (docs/extending.md), or its training fails unless the jobs' "
                "environment has it"
            )
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a package the module needs, which the jobs' environment may have
            warnings.append(
                f"custom network {name!r}: its module {module_name!r} imports {exc.name!r}, which is not installed "
                "here; its training fails unless the jobs' environment has it"
            )
            continue
        except Exception as exc:  # the user's module, whatever it raises
            errors.append(f"custom network {name!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}")
            continue
        if not callable(getattr(module, function, None)):
            defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            errors.append(
                f"custom network {name!r}: {module_name} ({getattr(module, '__file__', '')}) has no function "
                f"{function!r}; it defines: {', '.join(defined) or 'none'}"
            )
            continue
        needed = _required_parameters(getattr(module, function))
        if needed:  # sonoseg calls the builder with no arguments: every training would fail so
            errors.append(
                f"custom network {name!r}: its builder {spec.get('builder')} needs argument(s) {', '.join(needed)}, "
                "and sonoseg calls it with none: give them defaults, or point the builder at a function of none"
            )
    return warnings, errors


def _required_parameters(function) -> list[str]:
    """The parameters a call with no arguments would lack ([] where none, or where Python cannot say)."""
    import inspect

    try:
        # Not through __wrapped__: a decorator that supplies the arguments makes a function of none.
        parameters = inspect.signature(function, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):  # a builtin or a callable class Python cannot inspect: left to the training
        return []
    lacking = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return [p.name for p in parameters if p.kind in lacking and p.default is inspect.Parameter.empty]


def register_all(custom_networks: dict) -> None:
    """The config's ``custom_networks`` (name -> register's keywords) into the catalog."""
    for name, spec in custom_networks.items():
        register(name, **spec)


def paper_table(table: str) -> dict[str, tuple]:
    """network -> (label, Dice mean, Dice std, HD95 mean, HD95 std) of one table, in the paper's row
    order; NaN where the paper has no row (extra rows)."""
    nan = float("nan")
    members = [name for name, item in CATALOG.items() if item.is_network and item.in_table(table)]
    order = ROW_ORDER.get(table, ())
    members = [n for n in order if n in members] + [n for n in members if n not in order]
    return {name: (CATALOG[name].label, *(CATALOG[name].paper or (nan,) * 4)) for name in members}


def backbone_kind(name: str) -> str | None:
    """The backbone kind of a network ('vgg16', 'resnet101', ...), or None without one."""
    return CATALOG[name].backbone if name in CATALOG else None


def has_backbone(name: str) -> bool:
    """Networks built on a backbone that ImageNet weights can initialise."""
    return backbone_kind(name) is not None


def auto_settings(train_section: dict, network: str) -> tuple[str, ...]:
    """The recipe settings chosen for a network on the validation set (``auto``: its override's value
    when it has one, else the train section's), in sonoseg.training.selection.SELECTABLE's order."""
    from sonoseg.training.selection import SELECTABLE

    return tuple(k for k in SELECTABLE if is_auto(train_section, network, k))


def is_auto(train_section: dict, network: str, setting: str) -> bool:
    """Whether a recipe setting is left to a choice for a network: its override's value when it has
    one, else the train section's, is ``auto``."""
    override = train_section.get("overrides", {}).get(network, {})
    return override.get(setting, train_section.get(setting)) == "auto"


def pretrained_backbone_for(train_section: dict, network: str) -> str:
    """The weights file a network starts from ('' for none): a per-network override
    ``train.overrides.<network>.pretrained_backbone`` wins over ``train.pretrained_backbones.<kind>``."""
    kind = backbone_kind(network)
    override = train_section.get("overrides", {}).get(network, {})
    if "pretrained_backbone" in override:
        if kind is None:
            raise SonosegError(
                f"config train.overrides.{network}.pretrained_backbone: {network} has no backbone "
                "that ImageNet weights can initialise"
            )
        return str(override["pretrained_backbone"] or "")
    if kind is None:
        return ""
    return str(train_section.get("pretrained_backbones", {}).get(kind) or "")
