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

How the limit is set, library by library:

- OpenBLAS built on pthreads (numpy's and scipy's wheels) has one thread
  count for the process. threadpoolctl only lets the first thread that set
  it change it again (others are silently ignored), so the count is set with
  OpenBLAS's own ``openblas_set_num_threads_local`` (0.3.27 and later),
  which in these builds sets the process's count from any thread. It is
  counted like the rest: the first step in sets it, the last one out
  restores it. (Restoring it per thread once let the first step to end give
  two threads back to another one mid-run: one run in a hundred of two LRS
  extractions in threads then differed from serial runs in the last bits.)
- OpenBLAS built on OpenMP keeps a count per thread: each thread sets and
  restores its own with the same function.
- Other BLAS libraries, and OpenBLAS older than 0.3.27, go through
  threadpoolctl's process-wide limit, counted the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_state = {"active": 0, "limiter": None, "previous": []}
_this_thread = threading.local()


@functools.cache
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries takes milliseconds: once per process. It only finds
    # libraries already loaded, and scipy's BLAS loads with scipy.linalg: import it first, or
    # a process whose first limit comes before that import never limits scipy's BLAS (its
    # banded Cholesky then sums in another order on a loaded machine).
    import scipy.linalg  # noqa: F401

    return ThreadpoolController()


@dataclasses.dataclass(frozen=True)
class _Setters:
    """How each loaded BLAS library's thread count is set (see the module notes)."""

    process_wide: tuple  # OpenBLAS pthreads: openblas_set_num_threads_local sets the process
    per_thread: tuple  # OpenBLAS OpenMP: the same function sets the calling thread's count
    others: ThreadpoolController | None  # the rest, through threadpoolctl


@functools.cache
def _setters() -> _Setters:
    process_wide, per_thread, handled = [], [], []
    for library in _controller().lib_controllers:
        if getattr(library, "internal_api", None) != "openblas":
            continue
        setter = getattr(getattr(library, "dynlib", None), "openblas_set_num_threads_local", None)
        if setter is None:
            continue
        setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
        openmp = getattr(library, "threading_layer", None) == "openmp"
        (per_thread if openmp else process_wide).append(setter)
        handled.append(library.filepath)
    others = [
        library.filepath
        for library in _controller().lib_controllers
        if library.user_api == "blas" and library.filepath not in handled
    ]
    return _Setters(
        tuple(process_wide),
        tuple(per_thread),
        _controller().select(filepath=others) if others else None,
    )


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
    setters = _setters()
    depth = getattr(_this_thread, "depth", 0)
    if depth == 0:
        _this_thread.previous = [setter(1) for setter in setters.per_thread]
    _this_thread.depth = depth + 1
    with _lock:
        if _state["active"] == 0:
            _state["previous"] = [setter(1) for setter in setters.process_wide]
            if setters.others is not None:
                _state["limiter"] = setters.others.limit(limits=1, user_api="blas")
        _state["active"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["active"] -= 1
            if _state["active"] == 0:
                if _state["limiter"] is not None:
                    _state["limiter"].restore_original_limits()
                    _state["limiter"] = None
                for setter, previous in zip(setters.process_wide, _state["previous"],
                                            strict=True):  # fmt: skip
                    setter(previous)
        _this_thread.depth -= 1
        if _this_thread.depth == 0:
            for setter, previous in zip(setters.per_thread, _this_thread.previous,
                                        strict=True):  # fmt: skip
                setter(previous)
