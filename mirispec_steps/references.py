"""What every reference-file loader of the package shares.

Loaders live with their mode (:mod:`mirispec_steps.lrs.references`,
:mod:`mirispec_steps.mrs.references`); here are the pieces they have in
common: where the packaged files are, and a cache keyed by a file's content
identity (resolved path, size, modification time) whose entries are never
mutated, so that steps running in several threads share them safely.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

import numpy as np

from mirispec_steps.errors import ReferenceFileError

__all__ = [
    "cached_by_content",
    "file_identity",
    "packaged_reference",
    "read_only",
    "references_used",
]

Loaded = TypeVar("Loaded")


def packaged_reference(filename: str) -> str:
    """
    Path of a reference file shipped inside the package.

    Parameters
    ----------
    filename : str
        File name inside ``mirispec_steps/reference_files``.

    Returns
    -------
    str
        Absolute path of the installed file.
    """
    return str(files("mirispec_steps.reference_files").joinpath(filename))


def file_identity(path: str | Path, reftype: str) -> tuple[str, int, int]:
    """
    What identifies a file's content for caching: resolved path, size, modification time.

    Parameters
    ----------
    path : str or Path
        The reference file.
    reftype : str
        Its reference type, for the error message.

    Returns
    -------
    (str, int, int)
        The cache key.

    Raises
    ------
    ReferenceFileError
        The file cannot be read.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ReferenceFileError(f"{reftype} reference file {path} cannot be read: {exc}") from None
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def cached_by_content(
    reftype: str, maxsize: int = 8
) -> Callable[[Callable[..., Loaded]], Callable[..., Loaded]]:
    """
    Cache a loader ``read(path, *args)`` by the file's content identity.

    The loader must return an object nobody mutates (frozen dataclasses,
    read-only arrays): the same object is handed to every caller, in every
    thread.

    Parameters
    ----------
    reftype : str
        Reference type, for error messages.
    maxsize : int
        Entries kept.

    Returns
    -------
    callable
        Decorator.
    """

    def decorate(read: Callable[..., Loaded]) -> Callable[..., Loaded]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(identity: tuple[str, int, int], *args) -> Loaded:
            return read(identity[0], *args)

        @functools.wraps(read)
        def load(path: str | Path, *args) -> Loaded:
            return cached(file_identity(path, reftype), *args)

        load.cache_clear = cached.cache_clear
        return load

    return decorate


def read_only(*arrays: np.ndarray) -> None:
    """Make arrays read-only in place (cached reference content is shared)."""
    for array in arrays:
        array.setflags(write=False)


def references_used(model) -> dict[str, str]:
    """
    Every reference file a product was made with, by reftype.

    jwst's schemas have a ``meta.ref_file`` entry for some reftypes only
    (not apcorr or psf, nor the package's own); the steps record all of them
    in the product's ``mirispec_references``. Packaged files read
    ``mirispec_steps://<file> (packaged default)`` or ``(fallback, CRDS
    unreachable)``.

    Parameters
    ----------
    model : DataModel
        A product of this package's steps.

    Returns
    -------
    dict
        Reftype to file name (empty when nothing was recorded).
    """
    recorded = getattr(model, "mirispec_references", None)
    if recorded is None:
        return {}
    return dict(getattr(recorded, "instance", recorded))
