"""The CRDS guard: exits, hangs, printed tracebacks and error logs of the client stay contained."""

import logging
import sys
import traceback

import pytest

from mirispec_steps import crds_guard
from mirispec_steps.crds_guard import call_guarded, is_crds_failure, is_crds_unreachable


def noisy_crds_failure():
    """What the CRDS client does offline: print a handled traceback, log an error, exit."""
    try:
        raise FileNotFoundError("jwst_offline.pmap")
    except FileNotFoundError:
        traceback.print_exc()
    logging.getLogger("CRDS").error("(FATAL) CRDS server connection and cache load FAILED.")
    sys.exit(1)


def test_exit_becomes_an_exception_and_the_noise_goes_to_debug(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="mirispec_steps.crds_guard")
    with pytest.raises(SystemExit) as caught:
        call_guarded(noisy_crds_failure)
    assert is_crds_failure(caught.value) and is_crds_unreachable(caught.value)
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and "FATAL" not in printed.err
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("FileNotFoundError: jwst_offline.pmap" in message for message in debug)
    assert any("CRDS ERROR: (FATAL)" in message for message in debug)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_guard_is_removed_after_the_call(capsys):
    stderr = sys.stderr
    assert call_guarded(lambda: 7) == 7
    assert sys.stderr is stderr
    assert crds_guard._DemoteGuardedRecords not in {
        type(f) for f in logging.getLogger("CRDS").filters
    }
    # Output of other threads was never held back.
    print("visible", file=sys.stderr)
    assert "visible" in capsys.readouterr().err


def test_a_hang_becomes_a_timeout(monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(crds_guard, "CRDS_TIMEOUT", 0.2)
    with pytest.raises(TimeoutError, match="no answer from CRDS within"):
        call_guarded(release.wait)
    release.set()


def test_a_bug_is_not_a_crds_failure():
    with pytest.raises(ZeroDivisionError):
        call_guarded(lambda: 1 / 0)
    assert not is_crds_failure(ZeroDivisionError())
