"""Run jwst steps with every reference file overridden and no CRDS server.

jwst's steps ask CRDS for their parameter files and, when finishing, for the
CRDS context; with no server configured the CRDS client calls ``sys.exit``.
:func:`offline_crds` points CRDS at a scratch cache holding only a
``server_config`` (see ``shared/data/README.md``), so such steps run offline
when all their reference types are overridden.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from crds.core.utils import clear_function_caches

__all__ = ["offline_crds", "SERVER_CONFIG"]

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
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    # The CRDS client keeps its configuration for the process: start from this one.
    clear_function_caches()
    try:
        yield cache
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_function_caches()
        if owned is not None:
            owned.cleanup()
