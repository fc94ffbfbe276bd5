"""Steps running at the same time in threads of one process (as threaded dask workers run them)."""

import ast
import logging
import os
import threading

import numpy as np
from conftest import _simulate_mrs_files
from numpy.testing import assert_array_equal

from mirispec_steps import LrsOptimalExtractStep, MrsPointSourcePipeline
from mirispec_steps.log_sharing import LoggerLending, ThreadFilter
from mirispec_steps.simulate import simulate_lrs


def test_a_handler_stays_until_the_last_run_gives_it_back():
    lending = LoggerLending()
    name = "mirispec_test.lending"
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    handler = logging.NullHandler()
    first = lending.lend([name], [handler], "INFO")
    second = lending.lend([name], [handler], logging.DEBUG)
    assert logger.level == logging.DEBUG
    lending.give_back(first)  # the first run ends while the second goes on
    assert handler in logger.handlers
    lending.give_back(second)
    assert handler not in logger.handlers
    assert logger.level == logging.WARNING


def test_a_handler_attached_by_its_owner_is_left_to_it():
    lending = LoggerLending()
    name = "mirispec_test.owned"
    handler = logging.NullHandler()
    logging.getLogger(name).addHandler(handler)
    lending.give_back(lending.lend([name], [handler]))
    assert handler in logging.getLogger(name).handlers
    logging.getLogger(name).removeHandler(handler)


def test_thread_filter_keeps_one_threads_lines():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    handler.addFilter(ThreadFilter())
    logger = logging.getLogger("mirispec_test.filter")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    thread = threading.Thread(target=logger.info, args=("other thread",))
    thread.start()
    thread.join()
    logger.info("this thread")
    logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["this thread"]


def _run_together(jobs):
    """Run the callables in threads that start together; their results in order."""
    barrier = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def run(index, job):
        barrier.wait()
        try:
            results[index] = job()
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _columns(x1d):
    for spec in x1d.spec:
        for name in ("FLUX", "FLUX_ERROR", "WAVELENGTH", "SURF_BRIGHT", "BACKGROUND"):
            yield np.asarray(spec.spec_table[name])


def test_two_lrs_optimal_extractions_in_threads_equal_serial_runs():
    """
    PSF references and geometry are shared read-only; results do not depend on timing.

    Not an accuracy test: concurrent against serial products of the same data
    (simulated with the package's LrsPsf, extracted with the packaged file).
    """
    models = [simulate_lrs("cal", seed=seed).model for seed in (31, 32)]

    def job(model):
        return lambda: LrsOptimalExtractStep.call(model)

    serial = [job(model)() for model in models]
    together = _run_together([job(model) for model in models])
    for alone, concurrent in zip(serial, together, strict=True):
        for a, b in zip(_columns(alone), _columns(concurrent), strict=True):
            assert_array_equal(a, b)


def test_two_mrs_pipelines_in_threads_equal_serial_runs(tmp_path):
    """The MRS geometry cache and the PSF and resolution references are used by both at once."""
    exposures = []
    for index, seed in enumerate((41, 42)):
        _, files = _simulate_mrs_files(
            tmp_path / f"e{index}", seed=seed, alpha=0.1 * index, time_loss=0.0
        )
        exposures.append(files)

    def job(files):
        return lambda: MrsPointSourcePipeline.call(
            files["rate"],
            steps={"mrs_calibrate": {"override_photom": files["photom"],
                                     "override_fringe": files["fringe"]}},
        )  # fmt: skip

    serial = [job(files)() for files in exposures]
    together = _run_together([job(files) for files in exposures])
    for alone, concurrent in zip(serial, together, strict=True):
        for a, b in zip(_columns(alone), _columns(concurrent), strict=True):
            assert_array_equal(a, b)


def test_one_blas_thread_limits_blas_libraries_loaded_after_the_package():
    """
    The first limit of a process may come before scipy.linalg is imported (a doctest, a step
    run before any scipy linear algebra): scipy's BLAS must be limited all the same. It once
    was not, and two LRS extractions in threads then differed from serial ones in the last bits.
    """
    import subprocess
    import sys

    script = (
        "from mirispec_steps.core.blas import one_blas_thread\n"
        "import sys\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "with one_blas_thread():\n"
        "    import scipy.linalg\n"
        "    from threadpoolctl import threadpool_info\n"
        "    print(sorted({i['filepath']: i['num_threads'] for i in threadpool_info()\n"
        "                  if i['user_api'] == 'blas'}.values()))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    counts = ast.literal_eval(completed.stdout.strip().splitlines()[-1])
    assert len(counts) >= 2 and set(counts) == {1}, counts


def _blas_thread_counts():
    from threadpoolctl import threadpool_info

    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_a_step_ending_while_another_runs_leaves_it_on_one_blas_thread():
    """
    The limit is counted: the first step to end must not give BLAS threads back to the other.

    A pthreads OpenBLAS's "per-thread" setter sets the whole process's count: when
    each thread restored its own count on leaving, the first to leave set two
    threads under the other one mid-run (the LRS extractions in threads then
    differed from serial ones in the last bits, one run in a hundred), and the
    process could be left on one thread.
    """
    from threadpoolctl import threadpool_limits

    from mirispec_steps.core.blas import one_blas_thread

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with one_blas_thread():
            first_in.set()
            second_in.wait(30)
        first_out.set()

    def second():
        first_in.wait(30)
        with one_blas_thread():
            second_in.set()
            first_out.wait(30)
            seen["after the first ended"] = _blas_thread_counts()

    with threadpool_limits(limits=2, user_api="blas"):
        original = _blas_thread_counts()
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seen["after both"] = _blas_thread_counts()
    assert original and set(original.values()) == {2}, original
    assert set(seen["after the first ended"].values()) == {1}, seen
    assert seen["after both"] == original, seen


def test_one_blas_thread_reaches_the_thread_that_asks():
    """
    A limit asked for from a thread other than the one that last set BLAS's threads must hold.

    threadpoolctl lets only the thread that first set a pthreads OpenBLAS's count
    change it again (here the main thread, two threads); a step in a dask
    worker's thread would otherwise keep two. The count is checked, and a
    banded Cholesky factorisation of the measured profile's size (which sums
    in another order on two threads on a loaded machine) must equal the
    one-thread result bit for bit.
    """
    from scipy import linalg
    from threadpoolctl import threadpool_limits

    from mirispec_steps.core.blas import one_blas_thread

    rng = np.random.default_rng(0)
    size, bandwidth = 666, 147
    band = rng.normal(0.0, 0.01, (bandwidth + 1, size))
    band[bandwidth] = 10.0 + rng.random(size)  # diagonally dominant: positive definite
    with one_blas_thread():
        expected = linalg.cholesky_banded(band, check_finite=False)
    results, counts = [], []

    def job():
        with one_blas_thread():
            counts.append(_blas_thread_counts())
            results.append(linalg.cholesky_banded(band, check_finite=False))

    with threadpool_limits(limits=2, user_api="blas"):
        assert set(_blas_thread_counts().values()) == {2}
        thread = threading.Thread(target=job)
        thread.start()
        thread.join()
    assert counts[0] and set(counts[0].values()) == {1}, counts
    assert_array_equal(results[0], expected)
