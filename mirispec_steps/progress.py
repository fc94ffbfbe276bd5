"""Progress of loops over exposures and integrations: log lines, a bar on a terminal, timing.

Long loops (a pipeline over an association, an extraction over thousands of
integrations) report how far they are in the log, about every tenth of the
work and at most every few seconds, draw a bar on standard error when that is
a terminal, and log the total and per-item time at the end.

Examples
--------
>>> import logging
>>> for index in progress(range(3), "integrations", logging.getLogger("demo")):
...     pass
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["progress"]

Item = TypeVar("Item")

#: Fraction of the work between log lines.
LOG_FRACTION = 0.1
#: Minimum seconds between log lines, so a fast loop does not flood the log.
LOG_INTERVAL = 5.0
#: Loops shorter than this are not reported step by step (only timed).
MIN_ITEMS = 2


def progress(
    items: Iterable[Item],
    label: str,
    logger: logging.Logger,
    total: int | None = None,
    stream=None,
) -> Iterator[Item]:
    """
    Yield ``items``, reporting progress and timing.

    Parameters
    ----------
    items : iterable
        What to loop over.
    label : str
        What the items are, e.g. ``"integrations"``.
    logger : logging.Logger
        Where progress and timing go (INFO).
    total : int or None
        Number of items, when ``items`` has no length.
    stream : file-like or None
        Where the bar is drawn; default standard error, and only when it is
        a terminal.

    Yields
    ------
    object
        The items, unchanged.
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    stream = sys.stderr if stream is None else stream
    bar = total is not None and total >= MIN_ITEMS and _is_terminal(stream)
    start = time.perf_counter()
    last_logged = start
    next_fraction = LOG_FRACTION
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if bar:
            _draw(stream, label, done, total, now - start)
        if total is None or total < MIN_ITEMS:
            continue
        fraction = done / total
        if done < total and fraction >= next_fraction and now - last_logged >= LOG_INTERVAL:
            remaining = (now - start) / done * (total - done)
            logger.info(
                f"{label}: {done}/{total} ({fraction:.0%}), "
                f"{now - start:.1f} s elapsed, about {remaining:.0f} s left"
            )
            last_logged = now
            next_fraction = (int(fraction / LOG_FRACTION) + 1) * LOG_FRACTION
    elapsed = time.perf_counter() - start
    if bar:
        stream.write("\n")
        stream.flush()
    if done:
        logger.info(f"{label}: {done} done in {elapsed:.2f} s ({elapsed / done * 1e3:.1f} ms each)")


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _draw(stream, label: str, done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = int(width * done / total)
    stream.write(
        f"\r{label}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:.1f} s"
    )
    stream.flush()
