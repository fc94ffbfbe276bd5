"""
One BLAS thread for the package's linear algebra.

Multi-threaded BLAS pays off on large matrices. The systems here are small
(a few hundred unknowns, stacks of 40 x 40 products): waking and
synchronising the threads costs more than the arithmetic, and on a loaded
machine a banded Cholesky factorisation of 666 unknowns takes 0.45 ms on one
thread and 3-10 ms on two. One thread also sums every product in the same
order, so a step's result does not depend on the machine's BLAS threads, on
other steps running at the same time, or on being run by the batch runner
(whose dask workers have one BLAS thread) or serially.

Every step runs inside :func:`one_blas_thread` (``MirispecStep.run``).

OpenBLAS (0.3.27 and later) keeps a thread count per calling thread, set
from the global one when the thread starts: a global limit set from a
thread other than the main one does not reach that thread's own calls. The
calling thread's count is therefore set too (``openblas_set_num_threads_local``),
besides the process-wide limit that other BLAS libraries and older OpenBLAS
follow.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_state = {"active": 0, "limiter": None}
_this_thread = threading.local()


@functools.cache
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries takes milliseconds: once per process. It only finds
    # libraries already loaded, and scipy's BLAS loads with scipy.linalg: import it first, or
    # a process whose first limit comes before that import never limits scipy's BLAS (its
    # banded Cholesky then sums in another order on a loaded machine).
    import scipy.linalg  # noqa: F401

    return ThreadpoolController()


@functools.cache
def _thread_count_setters() -> tuple:
    """OpenBLAS's per-thread setters of the loaded libraries (those that have one)."""
    setters = []
    for library in _controller().lib_controllers:
        setter = getattr(getattr(library, "dynlib", None), "openblas_set_num_threads_local", None)
        if setter is not None:
            setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
            setters.append(setter)
    return tuple(setters)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """
    Limit BLAS to one thread while any caller in the process is inside this context.

    The limit is process-wide (BLAS libraries have one setting), so it is
    counted: the first caller sets it and the last one to leave restores the
    original, whatever the threads' timing. Code outside the package running
    in other threads meanwhile loses BLAS threads (and may sum in another
    order: last-bit differences), never correctness.

    Examples
    --------
    >>> import numpy as np
    >>> with one_blas_thread():
    ...     product = np.ones((40, 40)) @ np.ones((40, 40))
    >>> float(product[0, 0])
    40.0
    """
    depth = getattr(_this_thread, "depth", 0)
    if depth == 0:
        _this_thread.previous = [setter(1) for setter in _thread_count_setters()]
    _this_thread.depth = depth + 1
    with _lock:
        if _state["active"] == 0:
            _state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _state["active"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["active"] -= 1
            if _state["active"] == 0:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None
        _this_thread.depth -= 1
        if _this_thread.depth == 0:
            for setter, previous in zip(_thread_count_setters(), _this_thread.previous,
                                        strict=True):  # fmt: skip
                setter(previous)
