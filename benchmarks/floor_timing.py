"""Shared timing for the benchmarks: a step's own cost above stpipe's per-call floor.

stpipe's ``Step.run`` starts with a ``gc.collect()`` that costs the same for
every step; the floor is a no-op Step's ``Step.call`` on the same input,
measured alternately with the steps compared.

After the warm-up the objects alive are frozen out of the collector
(``gc.freeze``, as the batch workers do): that collection then costs ~2 ms
instead of ~110 ms (jwst, astropy and the models are large heaps), so the
floor no longer carries 10-20 ms of noise into own costs of 50-100 ms. It
removes the same work from both sides of every comparison.
"""

import gc
import time

import numpy as np
from jwst.stpipe import Step

__all__ = ["NoOpStep", "compare_above_floor"]


class NoOpStep(Step):
    """Does nothing: measures stpipe's per-call floor."""

    class_alias = "noop"

    def process(self, model):
        return model


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def compare_above_floor(label, model, ours, theirs, repeats, labels=("ours", "jwst")):
    """
    Time ``ours()`` and ``theirs()`` against the no-op floor on ``model``; print and return.

    ``labels`` name the two sides in the printout (``theirs`` is jwst by default).

    Returns
    -------
    (float, float)
        Own cost (seconds above the floor) of ours and of theirs.
    """
    noop = lambda: NoOpStep.call(model)  # noqa: E731
    ours(), theirs(), noop()  # warm up
    gc.collect()
    gc.freeze()
    results = {"ours": [], "theirs": [], "floor": []}
    for _ in range(repeats):
        results["floor"].append(_timed(noop))
        results["ours"].append(_timed(ours))
        results["floor"].append(_timed(noop))
        results["theirs"].append(_timed(theirs))
    floor = np.median(results["floor"])
    t_ours, t_theirs = np.median(results["ours"]), np.median(results["theirs"])
    own_ours, own_theirs = t_ours - floor, t_theirs - floor
    first, second = labels
    print(f"\n{label}")
    print(f"  Step.call: {first} {t_ours * 1e3:8.1f} ms   {second} {t_theirs * 1e3:8.1f} ms")
    print(f"  no-op floor {floor * 1e3:8.1f} ms")
    print(f"  own cost:  {first} {own_ours * 1e3:8.1f} ms   {second} {own_theirs * 1e3:8.1f} ms")
    print(f"  ratio ({second} / {first}, above the floor): "
          f"{own_theirs / max(own_ours, 1e-6):6.2f}x")  # fmt: skip
    return own_ours, own_theirs
