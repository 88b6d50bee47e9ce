"""The installed package holds every module: pyproject.toml lists its packages explicitly (conf/
is mapped to medprobe.conf), and the tests import the source tree (pytest's pythonpath), so a
package missing from the list would pass every other test and fail after ``pip install .``."""

from __future__ import annotations

import tomllib

from helpers import REPO


def test_every_package_of_the_source_tree_is_installed() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    in_tree = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "medprobe").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert "medprobe.extractors.vlm" in in_tree
    assert in_tree - listed == set()
    assert listed - in_tree == {"medprobe.conf"}  # the top-level conf/ (package-dir)
    assert pyproject["tool"]["setuptools"]["package-dir"] == {"medprobe.conf": "conf"}
