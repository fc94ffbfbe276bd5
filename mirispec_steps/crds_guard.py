"""
Calls into the CRDS client that cannot end the process, hang it, or flood its output.

The CRDS client calls ``sys.exit`` when it has no server, may wait for a
network that never answers, prints tracebacks of the failures it then
handles, and logs them as errors. Every CRDS call of this package goes
through :func:`call_guarded`: the call runs in a worker thread whose
``SystemExit`` becomes an ordinary exception, a hang becomes a
``TimeoutError`` after :data:`CRDS_TIMEOUT` seconds, and whatever the
client prints or logs from that thread is kept at DEBUG level in our log
(the caller decides what the user is told, once, in plain words).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading

from crds.core.exceptions import (
    CrdsDownloadError,
    CrdsError,
    CrdsNetworkError,
    CrdsWebError,
    ServiceError,
)

__all__ = ["CRDS_TIMEOUT", "call_guarded", "is_crds_failure", "is_crds_unreachable"]

log = logging.getLogger(__name__)

#: Seconds to wait for a CRDS answer before giving up with a clear error.
CRDS_TIMEOUT = float(os.environ.get("MIRISPEC_CRDS_TIMEOUT", "60"))

#: Name prefix of the threads that run CRDS calls.
THREAD_NAME = "mirispec-crds"


def _in_guarded_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_NAME)


class _GuardedStderr(io.TextIOBase):
    """``sys.stderr`` that keeps what guarded threads write and passes everything else on."""

    def __init__(self, original):
        self.original = original
        self.kept: dict[int, list[str]] = {}

    def write(self, text: str) -> int:
        if _in_guarded_thread():
            self.kept.setdefault(threading.get_ident(), []).append(text)
            return len(text)
        return self.original.write(text)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name):
        return getattr(self.original, name)


class _DemoteGuardedRecords(logging.Filter):
    """Records the CRDS logger emits from a guarded thread go out at DEBUG level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _in_guarded_thread() and record.levelno > logging.DEBUG:
            log.debug("CRDS %s: %s", record.levelname, record.getMessage())
            return False
        return True


_lock = threading.Lock()
_users = 0
_stderr: _GuardedStderr | None = None
_demote = _DemoteGuardedRecords()


def _enter() -> None:
    """Install the stderr proxy and the CRDS log filter (shared by concurrent calls)."""
    global _users, _stderr
    with _lock:
        if _users == 0:
            _stderr = _GuardedStderr(sys.stderr)
            sys.stderr = _stderr
            logging.getLogger("CRDS").addFilter(_demote)
        _users += 1


def _leave(ident: int | None) -> None:
    """Log what the call printed at DEBUG level; remove the proxy after the last call."""
    global _users, _stderr
    with _lock:
        printed = "".join(_stderr.kept.pop(ident, [])) if ident is not None else ""
        _users -= 1
        if _users == 0:
            # Someone else may have replaced sys.stderr meanwhile (pytest's capture): keep theirs.
            if sys.stderr is _stderr:
                sys.stderr = _stderr.original
            logging.getLogger("CRDS").removeFilter(_demote)
            _stderr = None
    if printed.strip():
        log.debug("CRDS client output:\n%s", printed.rstrip())


def is_crds_failure(exc: BaseException) -> bool:
    """
    True for the ways the CRDS client fails: its own errors, its ``sys.exit``,
    or no answer in time.

    Parameters
    ----------
    exc : BaseException
        What a CRDS look-up raised.

    Returns
    -------
    bool
        Whether it is a CRDS failure (anything else is a bug to report with
        its traceback).

    Examples
    --------
    >>> is_crds_failure(SystemExit(1)), is_crds_failure(ValueError("bug"))
    (True, False)
    """
    return isinstance(exc, (CrdsError, SystemExit, TimeoutError))


def is_crds_unreachable(exc: BaseException) -> bool:
    """
    True when CRDS could not be asked at all (no server, no cache, no answer in time).

    A CRDS that answers "no such reference for these data" is reachable: that
    is not a reason to use a packaged fallback.

    Parameters
    ----------
    exc : BaseException
        What a CRDS look-up raised.

    Returns
    -------
    bool
        Whether the failure is CRDS's unavailability.
    """
    return isinstance(
        exc,
        (SystemExit, TimeoutError, CrdsDownloadError, CrdsNetworkError, CrdsWebError, ServiceError),
    )


def call_guarded(function, *args):
    """
    Run a CRDS client call, turning ``sys.exit`` and hangs into exceptions.

    Parameters
    ----------
    function : callable
        The CRDS (or stpipe CRDS client) function.
    *args
        Its arguments.

    Returns
    -------
    object
        What ``function`` returned.

    Raises
    ------
    SystemExit, CrdsError
        As the client raised them (test with :func:`is_crds_failure`).
    TimeoutError
        No answer within :data:`CRDS_TIMEOUT` seconds.

    Examples
    --------
    >>> call_guarded(sum, [1, 2])
    3
    >>> try:
    ...     call_guarded(sys.exit, 2)
    ... except SystemExit as exc:
    ...     print("caught exit code", exc.code)
    caught exit code 2
    """
    outcome = {}

    def target():
        outcome["ident"] = threading.get_ident()
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # the CRDS client raises SystemExit
            outcome["error"] = exc

    _enter()
    thread = threading.Thread(target=target, daemon=True, name=THREAD_NAME)
    try:
        thread.start()
        thread.join(CRDS_TIMEOUT)
    finally:
        _leave(outcome.get("ident") if not thread.is_alive() else None)
    if thread.is_alive():
        raise TimeoutError(f"no answer from CRDS within {CRDS_TIMEOUT:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
