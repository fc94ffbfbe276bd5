"""Shared timing for the benchmarks: a step's own cost above stpipe's per-call floor.

stpipe's ``Step.run`` starts with a ``gc.collect()`` that costs the same for
every step; the floor is a no-op Step's ``Step.call`` on the same input,
measured alternately with the steps compared.
"""

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


def compare_above_floor(label, model, ours, theirs, repeats):
    """
    Time ``ours()`` and ``theirs()`` against the no-op floor on ``model``; print and return.

    Returns
    -------
    (float, float)
        Own cost (seconds above the floor) of ours and of jwst.
    """
    noop = lambda: NoOpStep.call(model)  # noqa: E731
    ours(), theirs(), noop()  # warm up
    results = {"ours": [], "jwst": [], "floor": []}
    for _ in range(repeats):
        results["floor"].append(_timed(noop))
        results["ours"].append(_timed(ours))
        results["floor"].append(_timed(noop))
        results["jwst"].append(_timed(theirs))
    floor = np.median(results["floor"])
    t_ours, t_jwst = np.median(results["ours"]), np.median(results["jwst"])
    own_ours, own_jwst = t_ours - floor, t_jwst - floor
    print(f"\n{label}")
    print(f"  Step.call: ours {t_ours * 1e3:8.1f} ms   jwst {t_jwst * 1e3:8.1f} ms")
    print(f"  no-op floor {floor * 1e3:8.1f} ms")
    print(f"  own cost:  ours {own_ours * 1e3:8.1f} ms   jwst {own_jwst * 1e3:8.1f} ms")
    print(f"  ratio (jwst / ours, above the floor): {own_jwst / max(own_ours, 1e-6):6.1f}x")
    return own_ours, own_jwst
