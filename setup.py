"""The wheel remembers the commit it was built from: an installed sonoseg has no git checkout around it, so
the records it writes (a study's captions, `segment`'s run.json) would otherwise name commit ``unknown``.
The build writes the checkout's commit, as sonoseg.data.provenance.commit_of reads it, into the built
package's BUILT_FROM (never into src/: an editable install keeps asking git). An sdist carries it in its
source tree, so that a wheel built from the sdist (`python -m build`, `uv build`: sdist first) keeps it. All
metadata is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

SOURCE = Path(__file__).resolve().parent / "src"


def provenance():
    sys.path.insert(0, str(SOURCE))
    try:
        from sonoseg.data import provenance
    finally:
        sys.path.remove(str(SOURCE))
    return provenance


def built_from() -> str:
    """The checkout's commit; in an unpacked sdist (no git), the one its source tree carries; else ''."""
    found = provenance()
    commit = found.commit_of(SOURCE / "sonoseg")
    if commit == "unknown":
        carried = SOURCE / "sonoseg" / found.BUILT_FROM
        commit = carried.read_text().strip() if carried.is_file() else ""
    return commit


class StampCommit(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        stamp = Path(self.build_lib) / "sonoseg" / provenance().BUILT_FROM
        commit = built_from()
        if commit:
            stamp.write_text(commit + "\n")
        else:  # nothing to say: and no stamp left in build/ by an earlier build either
            stamp.unlink(missing_ok=True)


class StampSdist(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        commit = built_from()
        if commit:
            (Path(base_dir) / "src" / "sonoseg" / provenance().BUILT_FROM).write_text(commit + "\n")


setup(cmdclass={"build_py": StampCommit, "sdist": StampSdist})
