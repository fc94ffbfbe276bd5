"""The package version: from the installed metadata, else from the source tree's pyproject.toml."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["__version__"]


def _source_tree_version() -> str:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    with open(pyproject, "rb") as stream:
        return tomllib.load(stream)["project"]["version"]


try:
    __version__ = version("mirispec_steps")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = _source_tree_version()
