"""The inputs of a batch: files, glob patterns, association files and list files.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("b_cal.fits", "a_cal.fits"):
...     _ = (folder / name).write_bytes(b"")
>>> [path.name for path in expand_inputs([str(folder / "*_cal.fits")])]
['a_cal.fits', 'b_cal.fits']
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

from mirispec_steps.errors import InputDataError

__all__ = ["LIST_SUFFIXES", "expand_inputs", "is_association"]

#: A file with one of these suffixes lists inputs, one per line (``#`` starts a comment).
LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """
    The input files of a batch, in the order given, each once.

    Parameters
    ----------
    inputs : iterable of str
        File paths, glob patterns (``*``, ``?``, ``[``), association JSON
        files (one input each: the step receives the association), or list
        files (``.txt``, ``.lst``, ``.list``, or any path prefixed with ``@``)
        whose lines are any of these, relative to the list file's folder.

    Returns
    -------
    list of Path
        Absolute paths.

    Raises
    ------
    InputDataError
        Naming every path that does not exist, every pattern that matches
        nothing, or when there is no input at all.
    """
    found, problems = [], []
    for item in inputs:
        _expand(str(item), Path.cwd(), found, problems, depth=0)
    if problems:
        raise InputDataError("batch inputs not found:\n  " + "\n  ".join(problems))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputDataError("the batch has no inputs")
    return unique


def _expand(item: str, base: Path, found: list, problems: list, depth: int) -> None:
    item = item.strip()
    if not item or item.startswith("#"):
        return
    listed = item.startswith("@")
    if listed:
        item = item[1:]
    path = Path(item).expanduser()
    if not path.is_absolute():
        path = base / path
    if any(character in item for character in "*?["):
        matches = sorted(glob.glob(str(path)))
        if not matches:
            problems.append(f"{item}: matches no file")
        found.extend(_absolute(match) for match in matches)
        return
    if not path.exists():
        problems.append(f"{item}: no such file")
        return
    if listed or path.suffix.lower() in LIST_SUFFIXES:
        if depth > 4:
            problems.append(f"{item}: list files nested too deep")
            return
        for line in path.read_text().splitlines():
            _expand(line, path.parent, found, problems, depth + 1)
        return
    found.append(_absolute(path))


def _absolute(path) -> Path:
    """Absolute and normalised, but not through symbolic links (products keep the link's name)."""
    import os

    return Path(os.path.abspath(path))


def is_association(path: Path) -> bool:
    """
    True for a JSON association file (the step receives it whole).

    Parameters
    ----------
    path : Path
        An input.

    Returns
    -------
    bool
        Whether it is an association.
    """
    if path.suffix.lower() != ".json":
        return False
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and "products" in content
