"""Handlers lent to shared loggers for the length of a run, safely across threads.

Loggers are process-wide. A step that attaches a handler to a logger for
its run and removes it afterwards breaks a concurrent run in another thread
that attached the same handler (the first to finish removes it for both),
and a level set and restored per run can be restored under the other's
feet. :class:`LoggerLending` counts the runs that use each handler and the
runs that need a level: a handler is removed, and the level restored, when
the last run that needed them ends.

Examples
--------
>>> import logging
>>> lending = LoggerLending()
>>> handler = logging.NullHandler()
>>> loan = lending.lend(["demo.lending"], [handler], logging.INFO)
>>> handler in logging.getLogger("demo.lending").handlers
True
>>> lending.give_back(loan)
>>> handler in logging.getLogger("demo.lending").handlers
False
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Loan", "LoggerLending", "ThreadFilter", "LENDING"]


@dataclass
class Loan:
    """What one run borrowed: (logger name, handler) pairs and the loggers whose level it set."""

    handlers: list[tuple[str, logging.Handler]] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)


class LoggerLending:
    """Reference-counted handlers and levels on named loggers (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._uses: Counter = Counter()  # (logger name, handler) -> runs using it
        self._level_uses: Counter = Counter()  # logger name -> runs needing the level
        self._previous_level: dict[str, int] = {}

    def lend(
        self,
        names: Sequence[str],
        handlers: Sequence[logging.Handler],
        level: int | str | None = None,
    ) -> Loan:
        """
        Attach ``handlers`` to the loggers ``names`` and lower them to ``level`` for one run.

        A handler already attached by someone else is left to its owner.

        Parameters
        ----------
        names : sequence of str
            Logger names.
        handlers : sequence of logging.Handler
            Handlers to attach.
        level : int, str or None
            Level the loggers need during the run (None: leave the levels).

        Returns
        -------
        Loan
            To pass to :meth:`give_back` when the run ends.
        """
        loan = Loan()
        if level is not None:
            # stpipe's configurations hold names ("INFO") or numbers.
            level = logging.getLevelName(level) if isinstance(level, str) else int(level)
            if not isinstance(level, int):
                level = None
        with self._lock:
            for name in names:
                logger = logging.getLogger(name)
                for handler in handlers:
                    key = (name, handler)
                    if self._uses[key] == 0 and handler in logger.handlers:
                        continue
                    if self._uses[key] == 0:
                        logger.addHandler(handler)
                    self._uses[key] += 1
                    loan.handlers.append(key)
                if level is not None and level != logging.NOTSET:
                    if self._level_uses[name] == 0:
                        self._previous_level[name] = logger.level
                    # The most verbose level any current run needs.
                    if logger.level == logging.NOTSET or level < logger.level:
                        logger.setLevel(level)
                    self._level_uses[name] += 1
                    loan.levels.append(name)
        return loan

    def give_back(self, loan: Loan) -> None:
        """
        End one run's loan: detach handlers and restore levels nobody else needs.

        Parameters
        ----------
        loan : Loan
            From :meth:`lend`.
        """
        with self._lock:
            for key in loan.handlers:
                self._uses[key] -= 1
                if self._uses[key] == 0:
                    del self._uses[key]
                    logging.getLogger(key[0]).removeHandler(key[1])
            for name in loan.levels:
                self._level_uses[name] -= 1
                if self._level_uses[name] == 0:
                    del self._level_uses[name]
                    logging.getLogger(name).setLevel(self._previous_level.pop(name))


class ThreadFilter(logging.Filter):
    """
    Passes the records emitted by one thread (a run's own lines, not a concurrent run's).

    Parameters
    ----------
    thread_id : int or None
        ``threading.get_ident()`` of the thread; default the calling thread.
    """

    def __init__(self, thread_id: int | None = None):
        super().__init__()
        self.thread_id = threading.get_ident() if thread_id is None else thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        """
        True for records of the thread.

        Parameters
        ----------
        record : logging.LogRecord
            A log record.

        Returns
        -------
        bool
            Whether to emit it.
        """
        return record.thread == self.thread_id


#: The process's lending desk (one per process: loggers are per process).
LENDING = LoggerLending()
