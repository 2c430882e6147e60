"""The wheel remembers the commit it was built from: an installed sonoseg has no git checkout around it, so
the records it writes (a study's captions, `segment`'s run.json) would otherwise name commit ``unknown``.
The build writes the checkout's commit, as sonoseg.data.provenance.commit_of reads it, into the built
package's BUILT_FROM (never into src/: an editable install keeps asking git). All metadata is in
pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "src"


class StampCommit(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        sys.path.insert(0, str(SOURCE))
        try:
            from sonoseg.data.provenance import BUILT_FROM, commit_of
        finally:
            sys.path.remove(str(SOURCE))
        commit = commit_of(SOURCE / "sonoseg")
        if commit != "unknown":  # built from an sdist: nothing to say
            (Path(self.build_lib) / "sonoseg" / BUILT_FROM).write_text(commit + "\n")


setup(cmdclass={"build_py": StampCommit})
