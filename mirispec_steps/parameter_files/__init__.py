"""Ready-made stpipe parameter files (ASDF) for our pipelines and the jwst integration recipes.

``strun`` accepts them in place of a class alias::

    strun $(mirispec-pars mirispec_mrs_point_source) jw..._rate.fits

They are written by ``make_parameter_files.py`` in this folder (the files
and that script are kept identical by a test). See
``docs/jwst_integration.rst``.
"""

from __future__ import annotations

import argparse
import shutil
from importlib.resources import files
from pathlib import Path

__all__ = ["parameter_file", "parameter_file_names", "main"]


def _folder() -> Path:
    return Path(str(files(__name__)))


def parameter_file_names() -> list[str]:
    """
    Names of the packaged parameter files (without ``.asdf``).

    Returns
    -------
    list of str
        Sorted names.
    """
    return sorted(path.stem for path in _folder().glob("*.asdf"))


def parameter_file(name: str) -> str:
    """
    Path of a packaged parameter file.

    Parameters
    ----------
    name : str
        Its name, with or without ``.asdf``, e.g. ``"calwebb_spec2_mrs_hooks"``.

    Returns
    -------
    str
        Absolute path.

    Raises
    ------
    KeyError
        If there is no such file; the message lists the names.
    """
    stem = name[:-5] if name.endswith(".asdf") else name
    path = _folder() / f"{stem}.asdf"
    if not path.is_file():
        raise KeyError(
            f"no parameter file {name!r}; available: {', '.join(parameter_file_names())}"
        )
    return str(path)


def main(argv=None) -> int:
    """
    ``mirispec-pars``: list the packaged parameter files, print a path, or copy them out.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        prog="mirispec-pars", description="Packaged stpipe parameter files of mirispec_steps."
    )
    parser.add_argument("name", nargs="?", help="print the path of this parameter file")
    parser.add_argument("--copy-to", help="copy the file (or all files, without a name) here")
    args = parser.parse_args(argv)
    names = [args.name] if args.name else parameter_file_names()
    try:
        paths = [parameter_file(name) for name in names]
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if args.copy_to:
        target = Path(args.copy_to)
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            print(shutil.copy(path, target))
    elif args.name:
        print(paths[0])
    else:
        for name in names:
            print(name)
    return 0
