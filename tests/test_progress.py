"""Progress reporting of long loops: log lines, a bar on a terminal only, timing at the end."""

import io
import logging

import pytest

from mirispec_steps import progress as progress_module
from mirispec_steps.progress import progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def logger(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    return logging.getLogger("test.progress")


def test_items_pass_through_with_timing_and_periodic_lines(logger, caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    assert list(progress(range(20), "integrations", logger, stream=io.StringIO())) == list(
        range(20)
    )
    lines = [record.getMessage() for record in caplog.records]
    periodic = [line for line in lines if "%)" in line]
    # about every tenth of the work, never at the end (the timing line covers it)
    assert len(periodic) == 9
    assert periodic[0].startswith("integrations: 2/20 (10%)")
    assert lines[-1].startswith("integrations: 20 done in ")
    assert "ms each" in lines[-1]


def test_rate_limited_log_lines(logger, caplog):
    list(progress(range(50), "exposures", logger, stream=io.StringIO()))
    # a fast loop logs only its timing
    assert [record.getMessage().split(":")[0] for record in caplog.records] == ["exposures"]
    assert "50 done" in caplog.records[0].getMessage()


def test_bar_only_on_a_terminal(logger):
    terminal, pipe = FakeTerminal(), io.StringIO()
    list(progress(range(5), "bins", logger, stream=terminal))
    list(progress(range(5), "bins", logger, stream=pipe))
    assert "\rbins: [" in terminal.getvalue() and "5/5" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_generator_without_length(logger, caplog):
    items = (value for value in range(3))
    assert list(progress(items, "batches", logger, stream=FakeTerminal())) == [0, 1, 2]
    assert caplog.records[-1].getMessage().startswith("batches: 3 done")
