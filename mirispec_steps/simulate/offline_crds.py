"""Run jwst steps offline: no CRDS server, references overridden or from a local CRDS.

jwst's steps ask CRDS for their parameter files and, when finishing, for the
CRDS context; with no server configured the CRDS client calls ``sys.exit``.
:func:`offline_crds` points CRDS at a scratch cache holding only a
``server_config`` (see ``shared/data/README.md``), so such steps run offline
when all their reference types are overridden. :func:`local_crds` goes one
step further: a local cache with its own context and rules, so that CRDS
itself selects given files for each exposure (by exposure type, or by
detector and band for MRS), exactly as the real CRDS does online.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from crds.core.utils import clear_function_caches

__all__ = ["local_crds", "offline_crds", "SERVER_CONFIG"]

_CONTEXT_SERIALS = itertools.count()

SERVER_CONFIG = (
    "{'observatory': 'jwst', 'operational_context': 'jwst_offline.pmap', "
    "'edit_context': 'jwst_offline.pmap', 'bad_files_list': [], 'bad_files': '', "
    "'force_remote_mode': False, 'last_synced': 'never', 'reference_url': {}, "
    "'mapping_url': {}, 'crds_version': {'str': 'offline'}}"
)


@contextmanager
def offline_crds(cache_dir: str | Path | None = None):
    """
    Context in which CRDS works from a scratch offline cache.

    Parameters
    ----------
    cache_dir : str or Path or None
        Folder for the scratch cache (a temporary one by default).

    Yields
    ------
    Path
        The cache folder.

    Notes
    -----
    CRDS reads its configuration from the process environment, so the
    settings are process-wide for the duration of the context (restored on
    exit): enter it once per process (a test session, a script, the batch
    client), not from concurrent threads. The batch runner sends the same
    settings to its workers.
    """
    owned = None
    if cache_dir is None:
        owned = tempfile.TemporaryDirectory(prefix="mirispec_crds_")
        cache_dir = owned.name
    cache = Path(cache_dir)
    config = cache / "config" / "jwst"
    config.mkdir(parents=True, exist_ok=True)
    (config / "server_config").write_text(SERVER_CONFIG)
    settings = {
        "CRDS_PATH": str(cache),
        "CRDS_SERVER_URL": "https://localhost:1",
        "CRDS_MODE": "local",
        "CRDS_CONTEXT": "jwst_offline.pmap",
        "STPIPE_DISABLE_CRDS_STEPPARS": "true",
    }
    try:
        with _environment(settings):
            yield cache
    finally:
        if owned is not None:
            owned.cleanup()


@contextmanager
def _environment(settings: dict):
    """The process environment with ``settings``, restored on exit; CRDS reads it afresh."""
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    # The CRDS client keeps its configuration and mappings for the process: start afresh.
    clear_function_caches()
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_function_caches()


def _header(kind: str, name: str, parkey, **extra) -> str:
    items = {"mapping": kind, "name": name, "observatory": "JWST", "parkey": parkey, **extra}
    items.update(sha1sum="none", derived_from="mirispec_steps.simulate")
    return "header = {\n" + "".join(f"    {k!r} : {v!r},\n" for k, v in items.items()) + "}\n"


@contextmanager
def local_crds(folder: str | Path, references: dict, exp_types=("MIR_MRS",)):
    """
    A reachable CRDS, offline: a local cache with a context, a MIRI imap and one rmap per reftype.

    Parameters
    ----------
    folder : str or Path
        Folder of the cache (created if needed).
    references : dict
        Reftype to a file, selected for every exposure of ``exp_types``; or
        to a mapping ``{(detector, band): file}``, selected by
        ``DETECTOR`` and ``BAND`` (the MRS ``photom`` and ``fringe``
        references of each grating setting).
    exp_types : sequence of str
        Exposure types the single files are selected for.

    Yields
    ------
    Path
        The cache folder.

    Notes
    -----
    Each call writes its own context (``jwst_<serial>.pmap``): the CRDS
    client keeps loaded mappings by name for the process. The settings are
    process-wide for the duration of the context, as for :func:`offline_crds`.
    """
    serial = f"{9000 + next(_CONTEXT_SERIALS):04d}"
    cache = Path(folder)
    for sub in ("config/jwst", "mappings/jwst", "references/jwst/miri"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    (cache / "config/jwst/server_config").write_text(
        SERVER_CONFIG.replace("jwst_offline.pmap", f"jwst_{serial}.pmap")
    )
    (cache / f"mappings/jwst/jwst_{serial}.pmap").write_text(
        _header("PIPELINE", f"jwst_{serial}.pmap", ("META.TELESCOPE",))
        + f"\nselector = {{\n    'MIRI' : 'jwst_miri_{serial}.imap',\n}}\n"
    )
    rmaps = {}
    for reftype, source in references.items():
        rmap = f"jwst_miri_{reftype}_{serial}.rmap"
        rmaps[reftype] = rmap
        by_setting = isinstance(source, dict)
        choices = source if by_setting else {None: source}
        cases = ""
        for index, (key, path) in enumerate(choices.items()):
            number = f"_{index}" if by_setting else ""
            filename = f"jwst_miri_{reftype}_{serial}{number}{Path(path).suffix}"
            shutil.copy(path, cache / "references/jwst/miri" / filename)
            keys = [tuple(key)] if by_setting else list(exp_types)
            cases += "".join(f"    {match!r} : {filename!r},\n" for match in keys)
        parkey = (
            (("META.INSTRUMENT.DETECTOR", "META.INSTRUMENT.BAND"),)
            if by_setting
            else (("META.EXPOSURE.TYPE",),)
        )
        (cache / "mappings/jwst" / rmap).write_text(
            _header("REFERENCE", rmap, parkey, instrument="MIRI", filekind=reftype.upper())
            + "\nselector = Match({\n"
            + cases
            + "})\n"
        )
    (cache / f"mappings/jwst/jwst_miri_{serial}.imap").write_text(
        _header(
            "INSTRUMENT", f"jwst_miri_{serial}.imap", ("META.INSTRUMENT.NAME",), instrument="MIRI"
        )  # fmt: skip
        + "\nselector = {\n"
        + "".join(f"    {reftype!r} : {rmap!r},\n" for reftype, rmap in rmaps.items())
        + "}\n"
    )
    settings = {
        "CRDS_PATH": str(cache),
        "CRDS_SERVER_URL": "https://localhost:1",
        "CRDS_MODE": "local",
        "CRDS_CONTEXT": f"jwst_{serial}.pmap",
        "CRDS_IGNORE_MAPPING_CHECKSUM": "1",
    }
    with _environment(settings):
        yield cache
